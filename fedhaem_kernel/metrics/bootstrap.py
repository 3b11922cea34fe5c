"""Bootstrap percentile confidence intervals for any metric."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Interval(NamedTuple):
    point: float
    lower: float
    upper: float


def bootstrap_ci(metric: Callable[..., float], *arrays, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> Interval:
    """Percentile bootstrap interval (Efron & Tibshirani 1993) of ``metric(*arrays)``.

    Every array is resampled jointly along its first axis (length n; pass a (n_times, n) survival
    matrix transposed and transpose it back inside ``metric``). Resamples where the metric is nan
    (e.g. no comparable pair) are dropped. Seeded: same seed, same interval. Returns
    Interval(point, lower, upper).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0]
    for i, a in enumerate(arrs[1:], start=1):
        if a.shape[0] != n:
            raise ValueError(f"array {i} has {a.shape[0]} rows, array 0 has {n}")
    point = float(metric(*arrs))
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        values[b] = metric(*(a[idx] for a in arrs))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(point, float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(point, float(lo), float(hi))
