"""What a synthesis run generates and with what: the generator and its validated
hyper-parameters, the generated columns (the TableSpec every node and the manager share), each
node's complete-case tables, and the run's seeds."""
from __future__ import annotations

import zlib

import pandas as pd

from fedhaem_kernel.schema import get_schema
from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import split_holdout
from generative import FEDERATED, FederatedGenerator, TableSpec, federated_generator

SYNTH_GENERATORS = tuple(FEDERATED)  # vae_bgm, bayesian_network, ctgan, sd_sharing

# Default generated columns of MDS (the set the benchmark bench/synthetic_mds.py uses).
_MDS_GENES = ("SF3B1", "TET2", "ASXL1", "SRSF2", "DNMT3A", "RUNX1", "U2AF1", "TP53", "EZH2", "ZRSR2",
              "STAG2", "IDH2", "CBL", "NRAS", "BCOR", "NF1", "CUX1", "ETV6", "KRAS", "PHF6", "IDH1",
              "JAK2", "MLL_PTD", "SETBP1")
DEFAULT_COLUMNS = {
    "MDS": ("age", "sex", "hb", "plt", "anc", "wbc", "bm_blast", "pb_blast", "cyto_ipssr", "complex",
            "del5q", "del7_7q", "del17_17p", "del20q", "plus8") + _MDS_GENES,
    "SCD": ("age", "sex", "genotype", "hbf", "hb", "retic", "ldh", "bilirubin", "wbc", "voc_per_year",
            "acs_history", "stroke_history", "hydroxyurea", "chronic_transfusion"),  # TCD: children only
}
# Right-skewed labs (and survival times) are modelled as log1p(x - minimum).
LOG_COLUMNS = ("plt", "anc", "wbc", "bm_blast", "pb_blast", "ldh", "ferritin", "crp")
QUASI_IDENTIFIERS = ("age", "sex", "cyto_ipssr")
MIN_ROWS = 20  # complete training rows a node needs to take part


def generator_hyper(kind: str, params: dict) -> dict:
    """Validated generator hyper-parameters (constructor keywords of the backend; sd_sharing:
    {"kind": base generator, **its hyper-parameters}); raises ValueError naming the bad key."""
    if kind not in SYNTH_GENERATORS:
        raise ValueError(f"generator {kind!r} is not one of {', '.join(SYNTH_GENERATORS)}")
    return FEDERATED[kind].check_hyper(params)


def federation(cfg: RunConfig, spec: TableSpec, summary: dict | None) -> FederatedGenerator:
    """The run's generator, trained across nodes (the same on the manager and on every node)."""
    return federated_generator(cfg.generator, spec, summary, hyper=cfg.generator_params,
                               local_epochs=cfg.local_epochs, seed=cfg.seed)


def synthesis_columns(cfg: RunConfig) -> list[str]:
    """Feature columns generated (survival columns excluded), in order."""
    schema = get_schema(cfg.use_case)
    if cfg.features:
        cols = list(cfg.features)
    elif cfg.feature_groups:
        cols = [f.name for f in schema.features if f.group in cfg.feature_groups]
    elif cfg.use_case in DEFAULT_COLUMNS:
        cols = list(DEFAULT_COLUMNS[cfg.use_case])
    else:
        cols = [f.name for f in schema.features if f.group in ("clinical", "cytogenetic", "genomic")]
    for c in cols:
        try:
            schema.feature(c)
        except KeyError:
            raise ValueError(f"features: {c!r} is not a feature of the {cfg.use_case} schema") from None
    return cols


def synthesis_spec(cfg: RunConfig) -> TableSpec:
    """The TableSpec every node and the manager share (public: built from the schema)."""
    schema = get_schema(cfg.use_case)
    cols = synthesis_columns(cfg)
    dur = schema.endpoint(cfg.endpoint).time_column
    return TableSpec.from_schema(schema, cols, cfg.endpoint, log=[c for c in cols if c in LOG_COLUMNS] + [dur],
                                 quasi_identifiers=[q for q in QUASI_IDENTIFIERS if q in cols])


def node_tables(df: pd.DataFrame, cfg: RunConfig, spec: TableSpec) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(training rows, held-out rows, rows left out for a missing value) of this node, validated
    against `spec`; the split is the same seeded split as survival studies."""
    missing = [c for c in spec.names if c not in df.columns]
    if missing:
        raise ValueError(f"the node's table lacks the generated column(s) {missing}")
    data = df[spec.names]
    complete = data.dropna().reset_index(drop=True)
    if len(complete) < MIN_ROWS:
        raise ValueError(f"{len(complete)} complete rows for the generated columns; need at least {MIN_ROWS}")
    complete = spec.validate(complete, where="node table")
    train, hold = split_holdout(complete, cfg.holdout_fraction, cfg.seed)
    return train.reset_index(drop=True), hold.reset_index(drop=True), int(len(data) - len(complete))


def run_seed(cfg: RunConfig, *parts) -> int:
    """A seed derived from the run's seed and `parts` (a step, a round, a node name)."""
    return zlib.crc32(":".join(map(str, (cfg.seed,) + parts)).encode()) & 0x7FFFFFFF
