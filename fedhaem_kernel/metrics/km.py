"""Kaplan-Meier estimator and log-rank test (times in any unit, consistent within a call)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from ._validate import survival_arrays


def _counts(t: np.ndarray, e: np.ndarray):
    """Per distinct time: (times, n_at_risk, n_events, n_censored)."""
    times, inverse = np.unique(t, return_inverse=True)
    d = np.bincount(inverse, weights=e.astype(float), minlength=times.size)
    total = np.bincount(inverse, minlength=times.size).astype(float)
    at_risk = total[::-1].cumsum()[::-1]
    return times, at_risk, d, total - d


def kaplan_meier(durations, events) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier product-limit estimate S(t) = prod_{s <= t} (1 - d_s / n_s).

    durations, events: shape (n,). Returns (times, survival), both (m,): time 0 (S = 1, unless a
    time is 0) followed by every distinct observed time (events and censorings), a right-continuous
    step function, as lifelines' ``KaplanMeierFitter.survival_function_``.
    """
    t, e = survival_arrays(durations, events, names=())
    if t.size == 0:
        raise ValueError("kaplan_meier needs at least one observation")
    times, n_risk, d, _ = _counts(t, e)
    surv = np.cumprod(1.0 - d / n_risk)
    if times[0] > 0:
        times = np.r_[0.0, times]
        surv = np.r_[1.0, surv]
    return times, surv


def step_at(times: np.ndarray, values: np.ndarray, at, *, before: float = 1.0) -> np.ndarray:
    """Evaluate a right-continuous step function (times (m,), values (m,)) at ``at``; ``before``
    is returned left of times[0]."""
    at = np.asarray(at, dtype=float)
    idx = np.searchsorted(times, at, side="right") - 1
    out = np.where(idx >= 0, values[np.clip(idx, 0, None)], before)
    return out


def censoring_km(durations, events, *, events_first: bool = True):
    """Kaplan-Meier of the censoring distribution G(t) = P(C > t), shapes (n,) -> (times, G).

    ``events_first=True`` removes events tied at a time from the risk set before the censorings
    (the usual convention, as scikit-survival's ``CensoringDistributionEstimator``);
    ``False`` keeps them (pycox ``kaplan_meier(durations, 1 - events)``).
    """
    t, e = survival_arrays(durations, events, names=())
    times, n_risk, d, c = _counts(t, e)
    risk = n_risk - d if events_first else n_risk
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(c > 0, 1.0 - c / np.where(risk > 0, risk, 1.0), 1.0)
    return times, np.cumprod(factor)


class LogRankResult(NamedTuple):
    statistic: float
    p_value: float
    df: int


def logrank_test(durations, events, groups) -> LogRankResult:
    """Log-rank test of equal survival across k >= 2 groups (Mantel 1966; Peto & Peto 1972).

    durations, events, groups: shape (n,); groups are any hashable labels. The statistic is
    U' V^-1 U over the first k-1 groups, U = observed - expected events and V the hypergeometric
    covariance, chi-square with k-1 degrees of freedom (as lifelines ``multivariate_logrank_test``).
    """
    t, e = survival_arrays(durations, events, names=())
    g = np.asarray(groups).ravel()
    if g.shape[0] != t.shape[0]:
        raise ValueError(f"groups has {g.shape[0]} values, durations has {t.shape[0]}")
    labels, gi = np.unique(g, return_inverse=True)
    k = labels.size
    if k < 2:
        raise ValueError("logrank_test needs at least two groups")
    times, ti = np.unique(t, return_inverse=True)
    m = times.size
    # events and subjects per (time, group), then risk sets by reverse cumulative sums
    d = np.zeros((m, k))
    np.add.at(d, (ti, gi), e.astype(float))
    tot = np.zeros((m, k))
    np.add.at(tot, (ti, gi), 1.0)
    n_g = tot[::-1].cumsum(axis=0)[::-1]
    n = n_g.sum(axis=1)
    d_tot = d.sum(axis=1)
    keep = d_tot > 0
    d, n_g, n, d_tot = d[keep], n_g[keep], n[keep], d_tot[keep]
    expected = n_g * (d_tot / n)[:, None]
    u = (d - expected).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 1, d_tot * (n - d_tot) / (n * n * (n - 1)), 0.0)
    # hypergeometric covariance: V_ab = sum_t f_t (n_t n_a delta_ab - n_a n_b)
    v = -np.einsum("t,ta,tb->ab", factor, n_g, n_g)
    v[np.diag_indices(k)] += (factor[:, None] * n[:, None] * n_g).sum(axis=0)
    u1, v1 = u[:-1], v[:-1, :-1]
    stat = float(u1 @ np.linalg.pinv(v1) @ u1)
    df = k - 1
    return LogRankResult(stat, float(stats.chi2.sf(stat, df)), df)
