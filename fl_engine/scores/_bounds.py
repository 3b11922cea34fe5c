"""Point scores with missing inputs: exact when complete, else best/worst bounds.

A component gives (lo, hi) points per patient: equal when its input is known, the smallest and
largest possible points when it is missing. The total score is reported only when complete; the
category is still reported when both bounds fall in the same category (the missing input cannot
change it). Never is a missing input read as 0.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import cut_right


def component(known_points: np.ndarray, missing: np.ndarray, lo: float, hi: float):
    pts = np.asarray(known_points, dtype=float)
    m = np.asarray(missing, dtype=bool)
    return np.where(m, lo, pts), np.where(m, hi, pts)


def bounded_result(prefix: str, index, parts: dict[str, tuple[np.ndarray, np.ndarray]],
                   cuts, labels, *, to_score=None) -> pd.DataFrame:
    """Frame with <prefix>_score, <prefix>_cat, <prefix>_missing from named (lo, hi) parts."""
    lo = np.sum([p[0] for p in parts.values()], axis=0)
    hi = np.sum([p[1] for p in parts.values()], axis=0)
    if to_score is not None:
        lo, hi = to_score(lo), to_score(hi)
    complete = lo == hi
    cat_lo = cut_right(lo, cuts, labels)
    cat_hi = cut_right(hi, cuts, labels)
    out = pd.DataFrame(index=index)
    out[f"{prefix}_score"] = np.where(complete, lo, np.nan)
    out[f"{prefix}_cat"] = np.where(cat_lo == cat_hi, cat_lo, np.nan)
    missing = [", ".join(k for k, (a, b) in parts.items() if a[i] != b[i])
               for i in range(len(index))]
    out[f"{prefix}_missing"] = [("missing: " + m) if m else "" for m in missing]
    return out
