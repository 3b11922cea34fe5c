"""The eight classic survival data sets as preprocessed for the SAVAE paper (Apellániz et al.,
Sci Rep 2024): one CSV each, covariate columns, then ``time`` and ``event``.

Time units are those of the source (days for whas / flchain / metabric / nwtco, months for
gbsg / pbc / std / pneumon); metrics only need them consistent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

CLASSIC_DATASETS = ("whas", "gbsg", "flchain", "nwtco", "pbc", "std", "pneumon", "metabric")


def load_classic(name: str, folder) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(covariates (n, p) DataFrame, durations (n,), events (n,) 0/1) of `<folder>/<name>.csv`."""
    if name not in CLASSIC_DATASETS:
        raise ValueError(f"unknown classic data set {name!r}; known: {', '.join(CLASSIC_DATASETS)}")
    path = Path(folder) / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    df = pd.read_csv(path)
    for col in ("time", "event"):
        if col not in df:
            raise ValueError(f"{path}: no {col!r} column")
    bad = df.index[df.time.isna() | (df.time < 0) | ~df.event.isin([0, 1])]
    if len(bad):
        raise ValueError(f"{path}: row {int(bad[0]) + 2}: time must be >= 0 and event 0/1 "
                         f"(got {df.time.iloc[bad[0]]!r}, {df.event.iloc[bad[0]]!r})")
    x = df.drop(columns=["time", "event"]).apply(pd.to_numeric, errors="coerce")
    return x, df.time.to_numpy(dtype=float), df.event.to_numpy(dtype=float)


def infer_kinds(x: pd.DataFrame, max_levels: int = 10) -> dict[str, str]:
    """Per column: "binary" (two values), "categorical" (3..max_levels integer values) or
    "numeric"."""
    kinds = {}
    for c in x:
        v = x[c].dropna()
        levels = v.nunique()
        if levels <= 2:
            kinds[c] = "binary"
        elif levels <= max_levels and np.allclose(v, v.round()):
            kinds[c] = "categorical"
        else:
            kinds[c] = "numeric"
    return kinds


@dataclass
class ClassicEncoder:
    """Fitted on training rows: numeric standardised, binary mapped to 0/1, categorical one-hot.
    `transform(impute=False)` keeps NaN (for SAVAE); `impute=True` puts the training mean / 0."""

    kinds: dict[str, str]
    stats: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, x: pd.DataFrame, kinds: dict[str, str] | None = None) -> "ClassicEncoder":
        kinds = kinds or infer_kinds(x)
        stats = {}
        for c, k in kinds.items():
            v = x[c].dropna()
            if k == "numeric":
                sd = float(v.std()) or 1.0
                stats[c] = (float(v.mean()), sd)
            else:
                stats[c] = sorted(v.unique().tolist())
        return cls(kinds, stats)

    def transform(self, x: pd.DataFrame, impute: bool = True) -> tuple[np.ndarray, list[str]]:
        """x (n rows) -> (float32 (n, width), SAVAE column kinds per output column)."""
        blocks, out_kinds = [], []
        for c, k in self.kinds.items():
            v = x[c].to_numpy(dtype=float)
            miss = np.isnan(v)
            if k == "numeric":
                mean, sd = self.stats[c]
                z = (v - mean) / sd
                blocks.append(np.where(miss & impute, 0.0, z)[:, None])
                out_kinds.append("gaussian")
            elif k == "binary":
                levels = self.stats[c]
                b = (v == levels[-1]).astype(float) if len(levels) == 2 else np.zeros_like(v)
                blocks.append(np.where(miss, 0.0 if impute else np.nan, b)[:, None])
                out_kinds.append("bernoulli")
            else:
                levels = self.stats[c]
                oh = np.stack([(v == lv) for lv in levels], axis=1).astype(float)
                if not impute:
                    oh[miss] = np.nan
                blocks.append(oh)
                out_kinds += [f"categorical:{c}"] * len(levels)
        return np.concatenate(blocks, axis=1).astype(np.float32), out_kinds
