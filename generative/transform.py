"""Federated column summaries and the shared data transformers built from them.

Every node sends per-column summaries of its own patients (category counts; for numeric
columns the count, sum and sum of squares, fixed quantiles and a Bayesian Gaussian mixture fitted
locally). The manager merges them into one *global summary*, from which each generator builds
the same transformer on every node: no patient row leaves a node.

Numeric mixtures (1-D Gaussian mixtures by EM) follow Fed-TGAN (Zhao et al., arXiv 2108.07927): the manager draws a "virtual"
sample from each node's mixture in proportion to its patients and fits one global mixture, which
gives CTGAN's mode-specific normalisation (Xu et al., NeurIPS 2019) for the whole federation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .spec import ColumnSpec, TableSpec

QUANTILE_PROBS = np.linspace(0.0, 1.0, 41)


# ------------------------------------------------------------------ scales
def _offset(c: ColumnSpec) -> float:
    return float(c.minimum) if c.minimum is not None else 0.0


def to_model_scale(c: ColumnSpec, x: np.ndarray) -> np.ndarray:
    """Values (n,) on the modelling scale: log1p(x - minimum) for log columns, else x."""
    x = np.asarray(x, dtype=np.float64)
    if c.log:
        return np.log1p(np.maximum(x - _offset(c), 0.0))
    return x


def from_model_scale(c: ColumnSpec, z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_model_scale`."""
    z = np.asarray(z, dtype=np.float64)
    if c.log:
        return np.expm1(np.maximum(z, 0.0)) + _offset(c)
    return z


def _fit_bgm(z: np.ndarray, n_modes: int, seed: int, iters: int = 150) -> dict:
    """1-D Gaussian mixture by EM (numpy; quantile initialisation, up to ``n_modes`` modes,
    modes under 0.5 % weight pruned as CTGAN's Bayesian mixture would) -> {"weights", "means",
    "stds"} on the model scale. Fast enough to run for every column on every node."""
    z = np.asarray(z, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    if len(z) > 3000:
        z = z[rng.choice(len(z), 3000, replace=False)]
    spread = float(np.ptp(z))
    floor = max(1e-3 * spread, 1e-4)  # no mode narrower than this (point masses such as 0 %)
    uniq = np.unique(z)
    if len(uniq) == 1 or spread == 0:
        return {"weights": np.array([1.0]), "means": np.array([float(z.mean())]), "stds": np.array([floor])}
    k = int(min(n_modes, len(uniq)))
    mu = np.quantile(z, (np.arange(k) + 0.5) / k)
    sd = np.full(k, max(spread / (2 * k), floor))
    w = np.full(k, 1.0 / k)
    for _ in range(iters):
        logp = np.log(w) - np.log(sd) - 0.5 * ((z[:, None] - mu) / sd) ** 2
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0)
        keep = nk / len(z) > 0.005
        r, nk = r[:, keep], nk[keep]
        w = nk / nk.sum()
        mu = (r * z[:, None]).sum(0) / nk
        sd = np.sqrt(np.maximum((r * (z[:, None] - mu) ** 2).sum(0) / nk, floor ** 2))
    o = np.argsort(mu)
    w, mu, sd = w[o], mu[o], sd[o]
    # EM splits a point mass into several identical modes: merge modes closer than the floor
    groups = np.concatenate([[0], np.cumsum(np.diff(mu) > 2 * floor)])
    gw = np.bincount(groups, w)
    gmu = np.bincount(groups, w * mu) / gw
    gvar = np.bincount(groups, w * (sd ** 2 + mu ** 2)) / gw - gmu ** 2
    return {"weights": gw / gw.sum(), "means": gmu, "stds": np.sqrt(np.maximum(gvar, floor ** 2))}


# ------------------------------------------------------------------ node / manager
def node_column_summaries(df: pd.DataFrame, spec: TableSpec, *, n_modes: int = 10,
                          seed: int = 0) -> dict:
    """Node side: per-column summaries of a validated table (n rows). No rows are returned."""
    data = spec.validate(df, where="node_column_summaries")
    cols = {}
    for c in spec.columns:
        if c.kind == "numeric":
            z = to_model_scale(c, data[c.name].to_numpy())
            cols[c.name] = {"sum": float(z.sum()), "sumsq": float((z * z).sum()),
                            "min": float(data[c.name].min()), "max": float(data[c.name].max()),
                            "quantiles": np.quantile(z, QUANTILE_PROBS),
                            "gmm": _fit_bgm(z, n_modes, seed)}
        elif c.kind == "binary":
            v = data[c.name].to_numpy()
            cols[c.name] = {"counts": np.array([(v == 0).sum(), (v == 1).sum()], dtype=np.int64)}
        else:
            v = data[c.name].to_numpy()
            cols[c.name] = {"counts": np.array([(v == k).sum() for k in c.categories], dtype=np.int64)}
    return {"n": int(len(data)), "columns": cols}


def manager_merge_summaries(summaries: list[dict], spec: TableSpec, *, n_modes: int = 10,
                            virtual_rows: int = 1500, seed: int = 0) -> dict:
    """Manager side: merge K node summaries into the global summary (same shape as one node's,
    numeric mixture refitted on Fed-TGAN virtual data, quantiles patient-weighted)."""
    if not summaries:
        raise ValueError("manager_merge_summaries: no node summaries")
    ns = np.array([s["n"] for s in summaries], dtype=float)
    N = ns.sum()
    rng = np.random.default_rng(seed)
    cols = {}
    for c in spec.columns:
        parts = []
        for k, s in enumerate(summaries):
            if c.name not in s["columns"]:
                raise ValueError(f"manager_merge_summaries: node {k} lacks column {c.name!r}")
            parts.append(s["columns"][c.name])
        if c.kind == "numeric":
            tot, tot2 = sum(p["sum"] for p in parts), sum(p["sumsq"] for p in parts)
            mean = tot / N
            std = float(np.sqrt(max(tot2 / N - mean * mean, 1e-12)))
            q = np.sum([n * np.asarray(p["quantiles"]) for n, p in zip(ns, parts)], axis=0) / N
            lo, hi = min(p["min"] for p in parts), max(p["max"] for p in parts)
            zlo, zhi = to_model_scale(c, np.array([lo, hi]))
            virt = []
            for n, p in zip(ns, parts):
                m = max(30, int(round(virtual_rows * n / N)))
                g = p["gmm"]
                comp = rng.choice(len(g["weights"]), size=m, p=np.asarray(g["weights"]) / np.sum(g["weights"]))
                virt.append(rng.normal(np.asarray(g["means"])[comp], np.asarray(g["stds"])[comp]))
            virt = np.clip(np.concatenate(virt), zlo, zhi)
            cols[c.name] = {"sum": tot, "sumsq": tot2, "mean": mean, "std": std, "min": lo,
                            "max": hi, "quantiles": q, "gmm": _fit_bgm(virt, n_modes, seed)}
        else:
            cols[c.name] = {"counts": np.sum([np.asarray(p["counts"]) for p in parts], axis=0)}
    return {"n": int(N), "columns": cols}


def local_summary(df: pd.DataFrame, spec: TableSpec, *, n_modes: int = 10, seed: int = 0) -> dict:
    """The global summary of a single table (centralised training, or one node alone)."""
    return manager_merge_summaries([node_column_summaries(df, spec, n_modes=n_modes, seed=seed)],
                                   spec, n_modes=n_modes, seed=seed)


# ------------------------------------------------------------------ encoders
@dataclass
class Span:
    column: str
    start: int
    dim: int
    activation: str  # "tanh" (mode-normalised scalar), "softmax", "linear", "sigmoid"
    role: str  # "alpha", "mode", "category", "numeric", "binary"


class ModeSpecificTransformer:
    """CTGAN's reversible transform: numeric -> (alpha in [-1, 1], one-hot mode of the global
    mixture); binary and categorical -> one-hot. Built from a global summary."""

    def __init__(self, spec: TableSpec, summary: dict):
        self.spec = spec
        self.summary = summary
        self.spans: list[Span] = []
        self.discrete: list[tuple[str, Span]] = []  # conditional-vector columns
        pos = 0
        for c in spec.columns:
            s = summary["columns"][c.name]
            if c.kind == "numeric":
                k = len(s["gmm"]["weights"])
                self.spans.append(Span(c.name, pos, 1, "tanh", "alpha"))
                self.spans.append(Span(c.name, pos + 1, k, "softmax", "mode"))
                pos += 1 + k
            else:
                k = 2 if c.kind == "binary" else len(c.categories)
                sp = Span(c.name, pos, k, "softmax", "category")
                self.spans.append(sp)
                self.discrete.append((c.name, sp))
                pos += k
        self.dim = pos

    @property
    def cond_dim(self) -> int:
        return sum(sp.dim for _, sp in self.discrete)

    def category_index(self, data: pd.DataFrame, c: ColumnSpec) -> np.ndarray:
        v = data[c.name].to_numpy()
        if c.kind == "binary":
            return v.astype(np.int64)
        lookup = {k: i for i, k in enumerate(c.categories)}
        return np.array([lookup[x] for x in v], dtype=np.int64)

    def encode(self, data: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        """Validated table (n rows) -> float32 (n, dim); modes drawn from their posterior."""
        n = len(data)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for c in self.spec.columns:
            s = self.summary["columns"][c.name]
            if c.kind == "numeric":
                g = s["gmm"]
                mu, sd, w = (np.asarray(g[k], dtype=float) for k in ("means", "stds", "weights"))
                z = to_model_scale(c, data[c.name].to_numpy())[:, None]
                logp = np.log(w + 1e-12) - np.log(sd) - 0.5 * ((z - mu) / sd) ** 2
                p = np.exp(logp - logp.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                u = rng.random((n, 1))
                mode = np.minimum((p.cumsum(1) < u).sum(1), len(w) - 1)
                alpha = (z[:, 0] - mu[mode]) / (4 * sd[mode])
                start = next(sp.start for sp in self.spans if sp.column == c.name)
                out[:, start] = np.clip(alpha, -0.99, 0.99)
                out[np.arange(n), start + 1 + mode] = 1.0
            else:
                sp = next(sp for sp in self.spans if sp.column == c.name)
                out[np.arange(n), sp.start + self.category_index(data, c)] = 1.0
        return out

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        """Generator output after activations (n, dim) -> table in the spec's dtypes."""
        out = {}
        for c in self.spec.columns:
            s = self.summary["columns"][c.name]
            if c.kind == "numeric":
                g = s["gmm"]
                start = next(sp.start for sp in self.spans if sp.column == c.name)
                k = len(g["weights"])
                mode = x[:, start + 1:start + 1 + k].argmax(1)
                alpha = np.clip(x[:, start], -1, 1)
                z = alpha * 4 * np.asarray(g["stds"])[mode] + np.asarray(g["means"])[mode]
                out[c.name] = finish_numeric(c, s, from_model_scale(c, z))
            else:
                sp = next(sp for sp in self.spans if sp.column == c.name)
                idx = x[:, sp.start:sp.start + sp.dim].argmax(1)
                out[c.name] = idx if c.kind == "binary" else np.asarray(c.categories, dtype=object)[idx]
        return pd.DataFrame(out)


def finish_numeric(c: ColumnSpec, summary_col: dict, x: np.ndarray) -> np.ndarray:
    """Clip to the observed federation range and round integer columns."""
    x = np.clip(x, summary_col["min"], summary_col["max"])
    if c.integer:
        x = np.round(x)
    return x


class StandardEncoder:
    """Numeric -> standardised model-scale value; binary -> 0/1; categorical -> one-hot.
    Used by the VAE and by the SAFE distance metrics. Built from a global summary."""

    def __init__(self, spec: TableSpec, summary: dict):
        self.spec = spec
        self.summary = summary
        self.spans: list[Span] = []
        pos = 0
        for c in spec.columns:
            if c.kind == "numeric":
                self.spans.append(Span(c.name, pos, 1, "linear", "numeric"))
                pos += 1
            elif c.kind == "binary":
                self.spans.append(Span(c.name, pos, 1, "sigmoid", "binary"))
                pos += 1
            else:
                self.spans.append(Span(c.name, pos, len(c.categories), "softmax", "category"))
                pos += len(c.categories)
        self.dim = pos

    def _ms(self, name):
        s = self.summary["columns"][name]
        return s["mean"], max(s["std"], 1e-6)

    def encode(self, data: pd.DataFrame) -> np.ndarray:
        """Validated table (n rows) -> float32 (n, dim)."""
        n = len(data)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for c, sp in zip(self.spec.columns, self.spans):
            if c.kind == "numeric":
                m, s = self._ms(c.name)
                out[:, sp.start] = (to_model_scale(c, data[c.name].to_numpy()) - m) / s
            elif c.kind == "binary":
                out[:, sp.start] = data[c.name].to_numpy()
            else:
                lookup = {k: i for i, k in enumerate(c.categories)}
                idx = np.array([lookup[v] for v in data[c.name].to_numpy()], dtype=np.int64)
                out[np.arange(n), sp.start + idx] = 1.0
        return out

    def decode_numeric(self, c: ColumnSpec, z_std: np.ndarray) -> np.ndarray:
        m, s = self._ms(c.name)
        return finish_numeric(c, self.summary["columns"][c.name], from_model_scale(c, z_std * s + m))
