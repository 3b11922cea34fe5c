"""Synthetic-data sharing: each node trains a generator on its own patients, samples, runs its
own privacy gate and shares only rows that passed; the manager pools the shared rows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .base import BaseGenerator
from .gate import GateThresholds, evaluate_gate
from .safe import SafeConfig, manager_pool, node_validate
from .spec import TableSpec


def node_share_synthetic(spec: TableSpec, train: pd.DataFrame, holdout: pd.DataFrame, *,
                         n_rows: int, kind: str = "vae_bgm", hyper: dict | None = None,
                         thresholds: GateThresholds | None = None, seed: int = 0) -> dict:
    """Node side: fit ``kind`` locally, sample n_rows, gate them against own patients.
    Returns {"n": patients, "passed", "gate", "rows": {column: array} or None}."""
    from .federated import make_generator  # federated.py imports this module back (see there)

    g = make_generator(kind, spec, seed=seed, **(hyper or {})).fit(train)
    syn = g.sample(n_rows, seed=seed + 7)
    rep = manager_pool([node_validate(syn, train, holdout, spec, parts=("privacy",),
                                      cfg=SafeConfig(seed=seed))], syn, spec)
    gate = evaluate_gate(rep, thresholds)
    rows = {c: syn[c].to_numpy() for c in syn.columns} if gate["passed"] else None
    return {"n": int(len(train)), "passed": gate["passed"], "gate": gate, "rows": rows}


def manager_pool_synthetic(shares: list[dict], spec: TableSpec) -> pd.DataFrame:
    """Manager side: concatenate the rows of nodes whose gate passed (validated table)."""
    frames = [pd.DataFrame(s["rows"]) for s in shares if s["passed"] and s["rows"] is not None]
    if not frames:
        raise ValueError("sd_sharing: no node passed its privacy gate; nothing to pool")
    return spec.validate(pd.concat(frames, ignore_index=True), where="manager_pool_synthetic")


class SyntheticPoolGenerator(BaseGenerator):
    """A pool of shared synthetic rows behind the generator interface: ``sample(n)`` draws rows
    from the pool (without replacement when n <= pool size, else with replacement)."""

    name = "sd_sharing"
    iterative = False

    def _fit(self, data: pd.DataFrame) -> None:
        self.pool = data.reset_index(drop=True)

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        idx = rng.choice(len(self.pool), n, replace=n > len(self.pool))
        return self.pool.iloc[idx].reset_index(drop=True)
