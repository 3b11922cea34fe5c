"""Kaplan-Meier curves by risk group over the federation, from counts only.

Each node bins its held-out patients' follow-up by month: per group and month bin k, the events
in [edge_k, edge_k+1) and the patients still at risk at edge_k. Summed over nodes these are the
pooled counts, so the manager's curve S(edge_k+1) = prod_j<=k (1 - d_j / n_j) is the monthly
(life-table style) Kaplan-Meier estimate of the pooled held-out patients; no patient's time
leaves a node. Groups: the federated model's predicted 2-year survival (>= 80 %, 50-80 %,
< 50 %) and the categories of the use case's conventional scores.
"""
from __future__ import annotations

import numpy as np

from fl_engine.scores.conventional import LABELS, group_layout

CURVE_EDGES_MONTHS = np.arange(0.0, 121.0, 1.0)  # 10 years, monthly
MODEL_HORIZON_MONTHS = 24.0
MODEL_GROUPS = ("2-year survival >= 80 %", "2-year survival 50-80 %", "2-year survival < 50 %")


def layout(use_case: str) -> list[tuple[str, str]]:
    """Rows of the count array: [(score name, category)], the model's groups first."""
    rows = [("model", g) for g in MODEL_GROUPS]
    for name, cats in group_layout(use_case):
        rows += [(name, c) for c in cats]
    return rows


def model_groups(surv_at_horizon: np.ndarray) -> np.ndarray:
    """Index into MODEL_GROUPS per patient (n,) from predicted survival at 24 months (n,)."""
    s = np.asarray(surv_at_horizon, dtype=float)
    return np.where(s >= 0.8, 0, np.where(s >= 0.5, 1, 2))


def group_counts(durations: np.ndarray, events: np.ndarray, groups: np.ndarray, n_groups: int,
                 min_cell: int = 0) -> tuple[np.ndarray, int]:
    """Counts (n_groups, 2, n_bins): [events in bin k, at risk at the bin's start] per group
    (index -1 = no group), durations in months; groups with fewer than `min_cell` patients are
    zeroed (small-cell suppression). Returns (counts, number of groups suppressed)."""
    edges = CURVE_EDGES_MONTHS
    d = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=float)
    g = np.asarray(groups, dtype=int)
    out = np.zeros((n_groups, 2, len(edges) - 1))
    suppressed = 0
    for k in range(n_groups):
        sel = g == k
        if not sel.any():
            continue
        if sel.sum() < min_cell:
            suppressed += 1
            continue
        dk, ek = d[sel], e[sel]
        out[k, 1] = (dk[None, :] >= edges[:-1, None]).sum(axis=1)
        # half-open bins [edge_k, edge_k+1) (np.histogram closes its last bin)
        idx = np.searchsorted(edges, dk[ek == 1], side="right") - 1
        idx = idx[(idx >= 0) & (idx < len(edges) - 1)]
        out[k, 0] = np.bincount(idx, minlength=len(edges) - 1)
    return out, suppressed


def curves_from_counts(counts: np.ndarray, use_case: str) -> dict:
    """Summed counts -> {"times": edges (months), "groups": [{score, label, category, n,
    survival}]}; survival has len(edges) values starting at 1; groups with no patient are left out."""
    rows = layout(use_case)
    if counts.shape[0] != len(rows):
        raise ValueError(f"curve counts have {counts.shape[0]} rows, the {use_case} layout has {len(rows)}")
    groups = []
    for (score, cat), c in zip(rows, counts):
        n0 = float(c[1, 0])
        if n0 <= 0:
            continue
        hazard = np.divide(c[0], c[1], out=np.zeros_like(c[0]), where=c[1] > 0)
        surv = np.concatenate([[1.0], np.cumprod(1.0 - hazard)])
        groups.append({"score": score, "label": "FedHaem model" if score == "model" else LABELS.get(score, score),
                       "category": cat, "n": int(n0), "survival": [round(float(v), 5) for v in surv]})
    return {"times": CURVE_EDGES_MONTHS.tolist(), "groups": groups}
