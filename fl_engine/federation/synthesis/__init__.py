"""Federated synthetic-cohort generation over the same Transport as survival studies.

Manager side: `run_synthesis(cfg, transport, sink)` (synthesis.driver), the phase driver of
every generator. Node side: the synth_* message kinds (synthesis.kinds, in the protocol of
fl_engine.federation.protocol), which `core.handle_request` answers and `core.check_reply_privacy`
checks: what may leave a node is column summaries, generator parameters, sufficient statistics
(counts), SAFE aggregates (counts, sums, histograms) and scalar scores. No patient row leaves a
node; the only rows that travel are synthetic: from manager to nodes (to be validated there)
and, for sd_sharing, gated shares from nodes to the manager.

Each generator (`generative.FederatedGenerator`, looked up by cfg.generator) states its own
steps: ``vae_bgm`` and ``ctgan`` train in rounds (FedAvg; vae_bgm adds a latent mixture);
``bayesian_network`` learns a structure, then counts, in one round; ``sd_sharing`` (one round)
has each node train a generator of the base kind (generator_params "kind", default vae_bgm) on
its own patients, sample its share of the rows, run ITS OWN privacy gate (generative.gate,
strict defaults) against its own holdout and reply with the rows only if the gate passed
(categories as integer codes into the spec's categories), always with the gate as scalars; at
most as many rows as the manager asked for. Every generator but sd_sharing also has each node
train a generator alone on its own patients and report its scores (alone_*).

At the end the final cohort (synthetic.csv), the pooled SAFE report and the gate
(generative.gate) are written to cfg.model_dir (synthesis.json).

Node tables are the ML-ready registry tables; the generated columns are cfg.features (default:
the core clinical, cytogenetic and genomic columns of the use case) plus the endpoint's
months/event columns; rows with a missing value in them are left out (complete cases; counted).
"""
from fl_engine.federation.synthesis.codec import (
    decode_payload, encode_payload, frame_to_payload, payload_to_frame, payload_to_rows, reply_payload,
    rows_to_payload,
)
from fl_engine.federation.synthesis.driver import run_synthesis, run_synthesis_in_process
from fl_engine.federation.synthesis.kinds import SYNTH_KINDS
from fl_engine.federation.synthesis.report import round_metrics_synth, save_synthesis, synthesis_files
from fl_engine.federation.synthesis.settings import (
    DEFAULT_COLUMNS, LOG_COLUMNS, MIN_ROWS, QUASI_IDENTIFIERS, SYNTH_GENERATORS, generator_hyper,
    node_tables, synthesis_columns, synthesis_spec,
)

__all__ = [
    "DEFAULT_COLUMNS", "LOG_COLUMNS", "MIN_ROWS", "QUASI_IDENTIFIERS", "SYNTH_GENERATORS", "SYNTH_KINDS",
    "decode_payload", "encode_payload", "frame_to_payload", "generator_hyper", "node_tables",
    "payload_to_frame", "payload_to_rows", "reply_payload", "round_metrics_synth", "rows_to_payload",
    "run_synthesis", "run_synthesis_in_process", "save_synthesis", "synthesis_columns", "synthesis_files",
    "synthesis_spec",
]
