"""Dimension reduction of high-dimensional embedding groups (image, radiomics), fitted
federatedly or per node.

Federated PCA: each node sends three aggregates of its complete rows x (n_k, p): the count
n_k, the column sums s_k = x^T 1 (p,) and the cross-product matrix C_k = x^T x (p, p). The
manager adds them up (n = sum n_k, s = sum s_k, C = sum C_k), forms the covariance
(C - s s^T / n) / (n - 1) and eigendecomposes it. Sums are exact, so the result equals PCA on
the pooled rows (up to floating point). No row leaves a node; a node with fewer rows than
`min_rows` refuses to send statistics, because a cross-product matrix over very few rows says a
lot about each of them.

Component signs are fixed (the largest-magnitude loading of each component is positive) so
every node and the manager agree. Rows with any missing value in the group are left out of the
statistics and get NaN scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import UseCaseSchema


def pca_stats(x: np.ndarray, min_rows: int = 10) -> dict:
    """Aggregates of one node's complete rows of x (n, p): {"n", "sum" (p,), "cross" (p, p)}."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"pca_stats: x must be 2-D, got shape {x.shape}")
    x = x[~np.isnan(x).any(axis=1)]
    if len(x) < min_rows:
        raise ValueError(f"pca_stats: {len(x)} complete rows, fewer than min_rows={min_rows}")
    return {"n": int(len(x)), "sum": x.sum(axis=0), "cross": x.T @ x}


def merge_pca_stats(parts: list[dict]) -> dict:
    """Sum node aggregates (equal to the pooled aggregates)."""
    if not parts:
        raise ValueError("merge_pca_stats: nothing to merge")
    p = np.shape(parts[0]["sum"])
    for i, s in enumerate(parts):
        if np.shape(s["sum"]) != p or np.shape(s["cross"]) != p * 2:
            raise ValueError(f"merge_pca_stats: part {i} has dimension {np.shape(s['sum'])}, expected {p}")
    return {"n": sum(int(s["n"]) for s in parts),
            "sum": np.sum([np.asarray(s["sum"], float) for s in parts], axis=0),
            "cross": np.sum([np.asarray(s["cross"], float) for s in parts], axis=0)}


@dataclass
class PCAReduction:
    """Centring vector mean (p,), components (k, p), explained variances (k,) and the total
    variance of the input; transform maps (n, p) to (n, k) scores."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    total_variance: float

    @classmethod
    def from_stats(cls, stats: dict, k: int) -> "PCAReduction":
        """PCA with k components from (merged) aggregates."""
        n = int(stats["n"])
        if n < 2:
            raise ValueError(f"PCAReduction: need at least 2 rows, got {n}")
        s = np.asarray(stats["sum"], float)
        mean = s / n
        cov = (np.asarray(stats["cross"], float) - np.outer(s, mean)) / (n - 1)
        cov = (cov + cov.T) / 2
        if not 1 <= k <= len(mean):
            raise ValueError(f"PCAReduction: k must be in [1, {len(mean)}], got {k}")
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:k]
        comps = vecs[:, order].T
        flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        comps = comps * flip[:, None]
        return cls(mean, comps, np.maximum(vals[order], 0.0), float(np.trace(cov)))

    @classmethod
    def fit(cls, x: np.ndarray, k: int) -> "PCAReduction":
        """Per-node (or pooled) fit on x (n, p)."""
        return cls.from_stats(pca_stats(x, min_rows=2), k)

    @property
    def explained_ratio(self) -> np.ndarray:
        return self.explained_variance / self.total_variance if self.total_variance > 0 \
            else np.zeros_like(self.explained_variance)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scores (n, k); NaN rows stay NaN."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"PCAReduction: x must be (n, {len(self.mean)}), got {x.shape}")
        return (x - self.mean) @ self.components.T

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "components": self.components.tolist(),
                "explained_variance": self.explained_variance.tolist(),
                "total_variance": self.total_variance}

    @classmethod
    def from_dict(cls, d: dict) -> "PCAReduction":
        return cls(np.asarray(d["mean"], float), np.asarray(d["components"], float),
                   np.asarray(d["explained_variance"], float), float(d["total_variance"]))


def embedding_columns(df: pd.DataFrame, schema: UseCaseSchema, prefix: str) -> list[str]:
    """Columns <prefix>_0 .. <prefix>_{p-1} of df, in index order."""
    groups = [g for g in schema.embeddings if g.prefix == prefix]
    if not groups:
        raise ValueError(f"{schema.use_case}: no embedding group {prefix!r}")
    cols = [c for c in df.columns if groups[0].matches(c)]
    return sorted(cols, key=lambda c: int(c.rpartition("_")[2]))


def reduce_embeddings(df: pd.DataFrame, schema: UseCaseSchema, prefix: str,
                      reduction: PCAReduction) -> pd.DataFrame:
    """df with the group's p columns replaced by k PCA scores named <prefix>_0 .. <prefix>_{k-1}
    (still an embedding group of the schema)."""
    cols = embedding_columns(df, schema, prefix)
    scores = reduction.transform(df[cols].to_numpy(float))
    out = df.drop(columns=cols).copy()
    for j in range(scores.shape[1]):
        out[f"{prefix}_{j}"] = scores[:, j]
    return out
