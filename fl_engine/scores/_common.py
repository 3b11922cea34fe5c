"""Input handling shared by the prognostic scores: DataFrame or one-patient dict in, same out."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import UseCaseSchema


def as_frame(data) -> tuple[pd.DataFrame, bool]:
    """(DataFrame, was_single_dict). A dict is one patient; a DataFrame one patient per row."""
    if isinstance(data, pd.DataFrame):
        return data, False
    if isinstance(data, Mapping):
        return pd.DataFrame([dict(data)]), True
    raise TypeError(f"expected a pandas DataFrame or a dict, got {type(data).__name__}")


def shape_output(out: pd.DataFrame, single: bool):
    """Return a dict of plain Python values for a single patient, else the frame."""
    if not single:
        return out
    row = out.iloc[0].to_dict()
    return {k: (None if (isinstance(v, float) and np.isnan(v)) else
                (v.item() if isinstance(v, np.generic) else v)) for k, v in row.items()}


def require(df: pd.DataFrame, columns, score: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{score}: input lacks column(s) {', '.join(missing)} "
                       "(use NaN values for unknown data, not absent columns)")


def _row_label(df: pd.DataFrame, pos: int) -> str:
    return f"row {pos} (index {df.index[pos]!r})"


def numeric(df: pd.DataFrame, column: str, schema: UseCaseSchema, score: str) -> pd.Series:
    """Column as float, NaN for missing; error naming row/column on text or out-of-range values."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = values.isna() & raw.notna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{score}: {_row_label(df, pos)}, column {column!r}: "
                         f"{raw.iloc[pos]!r} is not a number")
    try:
        feat = schema.feature(column)
    except KeyError:
        return values
    lo, hi = feat.minimum, feat.maximum
    low = (values < lo) if lo is not None else False
    out = low | ((values > hi) if hi is not None else False)
    if np.any(out):
        pos = int(np.flatnonzero(np.asarray(out))[0])
        raise ValueError(f"{score}: {_row_label(df, pos)}, column {column!r}: {values.iloc[pos]} "
                         f"is outside the allowed range [{lo}, {hi}] {feat.unit}".rstrip())
    return values


def binary(df: pd.DataFrame, column: str, score: str) -> pd.Series:
    """0/1 column as float with NaN for missing; error naming row/column otherwise."""
    raw = df[column]
    values = pd.to_numeric(raw.replace({True: 1, False: 0}), errors="coerce").astype(float)
    bad = (values.isna() & raw.notna()) | ~(values.isna() | values.isin((0.0, 1.0)))
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{score}: {_row_label(df, pos)}, column {column!r}: "
                         f"{raw.iloc[pos]!r} is not 0, 1 or missing")
    return values


def categorical(df: pd.DataFrame, column: str, allowed, score: str) -> pd.Series:
    """Category column with NaN for missing; error naming row/column for unknown labels."""
    raw = df[column]
    ok = raw.isna() | raw.isin(allowed)
    if not ok.all():
        pos = int(np.flatnonzero(~ok.to_numpy())[0])
        raise ValueError(f"{score}: {_row_label(df, pos)}, column {column!r}: {raw.iloc[pos]!r} "
                         f"is not one of {', '.join(map(str, allowed))}")
    return raw.where(raw.notna(), None)


def missing_reason(frame: dict[str, pd.Series], index) -> pd.Series:
    """'missing: a, b' per row listing the NaN inputs among ``frame``; '' when complete."""
    names = list(frame)
    isna = pd.DataFrame({k: pd.isna(v).to_numpy() for k, v in frame.items()}, index=index)
    return isna.apply(lambda r: ("missing: " + ", ".join(n for n in names if r[n])) if r.any()
                      else "", axis=1).astype(object) if len(isna) else pd.Series([], dtype=object)


def cut_right(values: np.ndarray, cutpoints, labels) -> np.ndarray:
    """Label by right-closed intervals (-inf, c1], (c1, c2], ..., (ck, inf); NaN stays NaN."""
    v = np.asarray(values, dtype=float)
    idx = np.searchsorted(np.asarray(cutpoints, dtype=float), v, side="left")
    out = np.array([labels[i] for i in idx], dtype=object)
    out[np.isnan(v)] = np.nan
    return out
