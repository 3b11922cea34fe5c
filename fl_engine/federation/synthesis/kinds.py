"""Synthetic-cohort generation's message kinds (fl_engine.federation.protocol): for each, what a
node answers (synthesis.node), what its reply may carry (synthesis.checks) and what the manager
makes of the replies (synthesis.aggregate).

  synth_summary    node column summaries -> one global summary (generative.transform)
  synth_round      local epochs of the global generator from the global parameters (FedAvg)
  synth_mixture    (vae_bgm) latent Gaussian mixture of the node's patients
  synth_structure  (bayesian_network) structure learnt on the node's patients
  synth_counts     (bayesian_network) family counts for the merged structure
  synth_alone      the node alone: a generator of the same kind, same global encoding, trained
                   on its own patients only; its scores, and for iterative kinds its parameters
  synth_share      (sd_sharing) the node's gated synthetic rows
  synth_validate   SAFE node_validate of a synthetic cohort against the node's own patients
A generator's steps (round, mixture, structure, counts, alone, share) travel as synth_<step>.
"""
from __future__ import annotations

from fl_engine.federation.protocol import MessageKind
from fl_engine.federation.synthesis import aggregate, checks, node

MESSAGE_KINDS = (
    MessageKind("synth_summary", node.answer_summary,
                checks.PayloadCheck(frozenset({"n", "columns"}), then=checks.check_summary),
                aggregate.merge_summaries, doc="column summaries of the training rows"),
    MessageKind("synth_round", node.answer_step("round", "round", per_round=True),
                checks.PayloadCheck(frozenset({"n", "params"}), then=checks.check_parameters),
                aggregate.into_generator("round"), doc="a FedAvg round of the generator"),
    MessageKind("synth_mixture", node.answer_step("mixture", "mix"),
                checks.PayloadCheck(frozenset({"n", "weights", "means", "covariances"})),
                aggregate.into_generator("mixture"), doc="the latent mixture of the node's patients"),
    MessageKind("synth_structure", node.answer_step("structure", "bn"),
                checks.PayloadCheck(frozenset({"n", "edges"}), identifiers=True),
                aggregate.into_generator("structure"), doc="a network structure learnt on the node"),
    MessageKind("synth_counts", node.answer_step("counts", "counts"),
                checks.PayloadCheck(frozenset({"n", "counts"})),
                aggregate.into_generator("counts"), doc="family counts in the merged structure"),
    MessageKind("synth_validate", node.answer_validate,
                checks.PayloadCheck(frozenset({"n_train", "n_holdout", "n_synthetic", "parts", "stats", "scores",
                                               "tstr", "privacy"}), then=checks.check_validation),
                aggregate.pool_validation, doc="SAFE aggregates of a synthetic cohort"),
    MessageKind("synth_alone", node.answer_alone,
                checks.PayloadCheck(frozenset({"params"}), then=checks.check_parameters),
                aggregate.into_generator("alone"), doc="the node alone: its own generator's scores"),
    MessageKind("synth_share", node.answer_share,
                checks.PayloadCheck(frozenset({"rows"}), then=checks.check_share),
                aggregate.pool_shares, doc="the node's gated synthetic rows (sd_sharing)"),
)
SYNTH_KINDS = tuple(k.name for k in MESSAGE_KINDS)
