"""Synthetic-data sharing: each node trains a generator on its own patients, samples, runs its
own privacy gate and shares only rows that passed; the manager pools the shared rows."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .backends import BACKENDS, make_generator
from .base import BaseGenerator, FederatedGenerator, Step, check_hyper
from .gate import GateThresholds, evaluate_gate
from .safe import SafeConfig, manager_pool, node_validate
from .spec import TableSpec

SHARE_BASES = ("vae_bgm", "bayesian_network", "ctgan")  # generators a node may train for sd_sharing


def node_share_synthetic(spec: TableSpec, train: pd.DataFrame, holdout: pd.DataFrame, *,
                         n_rows: int, kind: str = "vae_bgm", hyper: dict | None = None,
                         thresholds: GateThresholds | None = None, seed: int = 0) -> dict:
    """Node side: fit ``kind`` locally, sample n_rows, gate them against own patients.
    Returns {"n": patients, "passed", "gate", "rows": {column: array} or None, "failed":
    the failed checks in words (`failed_checks`)}."""
    g = make_generator(kind, spec, seed=seed, **(hyper or {})).fit(train)
    syn = g.sample(n_rows, seed=seed + 7)
    rep = manager_pool([node_validate(syn, train, holdout, spec, parts=("privacy",),
                                      cfg=SafeConfig(seed=seed))], syn, spec)
    gate = evaluate_gate(rep, thresholds)
    rows = {c: syn[c].to_numpy() for c in syn.columns} if gate["passed"] else None
    return {"n": int(len(train)), "passed": gate["passed"], "gate": gate, "rows": rows,
            "failed": failed_checks(gate["checks"])}


def failed_checks(checks: list[dict]) -> list[str]:
    """'check measured vs threshold' for each failed gate check ({"name", "measured",
    "threshold", "margin"}, as `generative.gate.evaluate_gate` reports them), in the given order."""
    out = []
    for c in checks:
        name, th, m, margin = c["name"], c["threshold"], c.get("measured"), c.get("margin")
        if m is None or margin is None or not math.isfinite(m):
            out.append(f"{name} not measured (threshold {th:g})")
        elif margin < 0:
            out.append(f"{name} {m:.3g} vs threshold {th:g}")
    return out


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


class SDSharingFederation(FederatedGenerator):
    """Synthetic-data sharing in one step ("share"): each node trains a generator of the base
    kind (hyper-parameter "kind", default vae_bgm) on its own patients, samples its share of the
    rows and gates them against its own holdout; only rows that passed leave it. The manager
    pools them. An iterative base trains for ``local_epochs`` unless "epochs" is given."""

    name = "sd_sharing"
    backend = SyntheticPoolGenerator
    uses_summary = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = self.hyper.pop("kind", "vae_bgm")
        if self.base not in SHARE_BASES:
            raise ValueError(f"sd_sharing: base generator {self.base!r} is not one of {', '.join(SHARE_BASES)}")
        if BACKENDS[self.base].iterative:
            self.hyper.setdefault("epochs", self.local_epochs)

    @classmethod
    def check_hyper(cls, params: dict) -> dict:
        base = params.get("kind", "vae_bgm")
        if base not in SHARE_BASES:
            raise ValueError(f"generator_params: kind={base!r} must be one of {', '.join(SHARE_BASES)} "
                             "(the generator each node trains for sd_sharing)")
        return {"kind": base, **check_hyper(BACKENDS[base], {k: v for k, v in params.items() if k != "kind"})}

    def start(self, common_start: bool = True) -> None:
        pass  # the pool is built from the nodes' shares

    def steps(self) -> tuple[Step, ...]:
        return (Step("share", "synthetic-data sharing", self._share_request, self._node_share, self._pool),)

    def _share_request(self, sizes: dict[str, int], n_rows: int) -> tuple[dict, dict[str, dict]]:
        """Each node's share of ``n_rows``, in proportion to its patients (integer ceiling)."""
        total = sum(sizes.values())
        return {"columns": self.spec.names}, {n: {"n_rows": max(1, -(-n_rows * k // total))} for n, k in sizes.items()}

    def _node_share(self, message: dict, train: pd.DataFrame, holdout: pd.DataFrame | None, seed: int) -> dict:
        if holdout is None:
            raise ValueError("sd_sharing: each node needs a holdout table for its privacy gate")
        return node_share_synthetic(self.spec, train, holdout, n_rows=message["n_rows"], kind=self.base,
                                    hyper=self.hyper, thresholds=self.thresholds, seed=seed)

    def _pool(self, answers: dict[str, dict]) -> None:
        """answers: {node: {"n", "passed", "rows", "failed"}}; ValueError naming every node's
        failed checks when none passed."""
        if not any(a["passed"] for a in answers.values()):
            detail = "; ".join(f"{n}: " + (", ".join(a["failed"]) or "no check measured") for n, a in answers.items())
            raise ValueError(f"sd_sharing: no node passed its privacy gate ({detail})")
        self.model = SyntheticPoolGenerator(self.spec, seed=self.seed).fit(
            manager_pool_synthetic(list(answers.values()), self.spec))
        self.model.fit_info["node_gates"] = [{"node": n, "n": a["n"], "passed": a["passed"], "failed": a["failed"]}
                                             for n, a in answers.items()]

    def sample_size(self, n: int) -> int:
        return min(n, len(self.model.pool))  # fewer rows when some node's gate failed
