"""Federated Kaplan-Meier, log-rank and stratified log-rank from per-grid-time counts.

The time grid (the study's ``time_step_months``, h): a duration d falls in grid step
j = floor(d / h) and is reported at the step's end, (j + 1) h months (`discretise`): an event in
the first month is "by month 1". No raw time leaves a hospital: each hospital sends, per group,
the number of events and of censored patients in each grid step (`node_counts`). The manager adds
them; the Kaplan-Meier curve of the summed counts is the curve of the pooled rows discretised to
the grid, exactly (lifelines' KaplanMeierFitter on those rows is the oracle in the tests).

At-risk counts at grid time t_j are the patients whose discretised time is >= t_j (what lifelines
counts). Greenwood's variance and the log(-log) bands are lifelines' formulas (its `_bounds`):
    lower/upper = exp(-exp(log(-log S) -/+ z sqrt(sum d / (n (n - d))) / log S)),
bands at S = 1 are 1 (lifelines' fillna). The median is the first time S <= 0.5 (lifelines'
qth_survival_time) and its CI the same time on the lower and upper bands; never reached = None.

Log-rank (k groups): observed minus expected events and the hypergeometric covariance, the first
k - 1 groups, a pseudo-inverse (lifelines' multivariate_logrank_test); stratified by hospital: the
same sums added over hospitals, each hospital's own risk sets (Mantel-Haenszel across strata).

Small cells: a hospital merges consecutive grid steps of one group until each reported step holds
at least `min_cell` patients leaving the risk set, 0 or >= `min_cell` events and 0 or >=
`min_cell` censored (fl_engine.analytics.cox.merge_steps); the merged patients are placed at the
grid step of the merged run's median patient (coarsened), and it reports how many it moved. A
group with fewer than `min_cell` patients at a hospital is not reported by it at all (its
patients are left out of that group's curve; the caller notes it).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from fl_engine.analytics.cox import merge_steps

Z95 = 1.959963984540054
MAX_GRID_MONTHS = 1200.0  # durations beyond 100 years are refused as implausible


class AnalysisInputError(ValueError):
    """Bad input to an analysis computation; the message names what and where."""


def grid_steps(durations, step_months: float) -> np.ndarray:
    """Grid step index of each duration (months): floor(d / h), computed as np.floor so that the
    same float rule applies at the nodes and in the oracle."""
    d = np.asarray(durations, dtype=np.float64)
    if not (isinstance(step_months, (int, float)) and math.isfinite(step_months) and step_months > 0):
        raise AnalysisInputError(f"time_step_months must be a positive number, got {step_months!r}")
    if d.size and (not np.all(np.isfinite(d)) or np.any(d < 0)):
        raise AnalysisInputError("durations must be finite and >= 0 months")
    if d.size and np.max(d) > MAX_GRID_MONTHS:
        raise AnalysisInputError(f"a duration of {np.max(d):g} months exceeds {MAX_GRID_MONTHS:g} months")
    return np.floor(d / float(step_months)).astype(np.int64)


def grid_times(n_steps: int, step_months: float) -> np.ndarray:
    """The reported time of each grid step: (j + 1) h."""
    return (np.arange(n_steps, dtype=np.float64) + 1.0) * float(step_months)


def discretise(durations, step_months: float) -> np.ndarray:
    """Durations as the grid reports them ((floor(d / h) + 1) h months): the pooled rows of the
    oracle."""
    return (grid_steps(durations, step_months).astype(np.float64) + 1.0) * float(step_months)


def max_steps(step_months: float) -> int:
    return int(math.floor(MAX_GRID_MONTHS / float(step_months))) + 1


def node_counts(durations, events, step_months: float, min_cell: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """One hospital's (one group's) (events (K,), censored (K,), patients moved) per grid step.
    ValueError when it has patients but fewer than `min_cell` (it cannot report)."""
    d = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events, dtype=np.float64)
    if d.shape != e.shape or d.ndim != 1:
        raise AnalysisInputError(f"durations {d.shape} and events {e.shape} must be two vectors of one length")
    if d.size and not np.all(np.isin(e, (0.0, 1.0))):
        raise AnalysisInputError("events must be 0 (censored) or 1 (event)")
    idx = grid_steps(d, step_months)
    k = int(idx.max()) + 1 if idx.size else 0
    moved = 0
    if min_cell > 0 and idx.size:
        idx, moved = merge_steps(idx, e, k, int(min_cell))
    ev = np.bincount(idx[e > 0], minlength=k).astype(np.float64)[:k]
    ce = np.bincount(idx[e == 0], minlength=k).astype(np.float64)[:k]
    return ev, ce, int(moved)


def pad_add(arrays: list[np.ndarray]) -> np.ndarray:
    """Sum 1-D count arrays of different lengths (padded with zeros)."""
    k = max((len(a) for a in arrays), default=0)
    out = np.zeros(k)
    for a in arrays:
        out[:len(a)] += a
    return out


def at_risk(events: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """Patients at risk at each grid step (still in the risk set at its start)."""
    exits = np.asarray(events, float) + np.asarray(censored, float)
    return exits[::-1].cumsum()[::-1]


def _first_at_or_below(times: np.ndarray, s: np.ndarray, q: float = 0.5) -> float | None:
    hit = np.flatnonzero(s <= q)
    return float(times[hit[0]]) if hit.size else None


def km_curve(events, censored, step_months: float) -> dict:
    """The Kaplan-Meier curve of summed counts: times [0, then every grid time with an exit],
    survival, log(-log) 95% bands, at-risk and events at each of these times, the median and its
    CI (module docstring)."""
    ev = np.asarray(events, dtype=np.float64)
    ce = np.asarray(censored, dtype=np.float64)
    n = at_risk(ev, ce)
    keep = (ev + ce) > 0
    t = np.concatenate([[0.0], grid_times(len(ev), step_months)[keep]])
    d = np.concatenate([[0.0], ev[keep]])
    r = np.concatenate([[n[0] if n.size else 0.0], n[keep]])
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.cumprod(np.where(r > 0, 1.0 - d / np.where(r > 0, r, 1.0), 1.0))
        var = np.where((r - d) > 0, d / (r * (r - d)), 0.0)
        cum = np.cumsum(var)
        v = np.log(s)
        lower = np.exp(-np.exp(np.log(-v) - Z95 * np.sqrt(cum) / v))
        upper = np.exp(-np.exp(np.log(-v) + Z95 * np.sqrt(cum) / v))
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    return {"time": t.tolist(), "survival": s.tolist(), "lower": lower.tolist(), "upper": upper.tolist(),
            "at_risk": [int(x) for x in r], "events": [int(x) for x in d],
            "median": _first_at_or_below(t, s), "median_ci": [_first_at_or_below(t, lower),
                                                              _first_at_or_below(t, upper)]}


def at_risk_table(events, censored, step_months: float, every_months: float, horizon: float) -> tuple[list[float], list[int]]:
    """Numbers at risk at 0, every, 2 every, ... <= horizon (months): patients whose discretised
    time is >= that time (the number still followed)."""
    ev = np.asarray(events, float)
    ce = np.asarray(censored, float)
    times = np.arange(0.0, horizon + 1e-9, float(every_months))
    reported = grid_times(len(ev), step_months)
    out = []
    for x in times:
        out.append(int(np.sum((ev + ce)[reported >= x - 1e-9])))
    return times.tolist(), out


def logrank_terms(events_by_group: list[np.ndarray], censored_by_group: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(observed - expected (k,), covariance (k, k)) of the log-rank test for k groups sharing one
    risk set (a stratum), from each group's per-grid-step counts."""
    k = len(events_by_group)
    length = max((len(a) for a in events_by_group + censored_by_group), default=0)
    ev = np.zeros((length, k))
    ex = np.zeros((length, k))
    for g in range(k):
        ev[:len(events_by_group[g]), g] = events_by_group[g]
        ex[:len(events_by_group[g]), g] += events_by_group[g]
        ex[:len(censored_by_group[g]), g] += censored_by_group[g]
    n_g = ex[::-1].cumsum(axis=0)[::-1]  # at risk per step and group
    n = n_g.sum(axis=1)
    d = ev.sum(axis=1)
    j = d > 0
    n_g, n, d, ev = n_g[j], n[j], d[j], ev[j]
    expected = (n_g * (d / n)[:, None]).sum(axis=0)
    z = ev.sum(axis=0) - expected
    factor = np.where(n > 1, (n - d) / np.where(n > 1, n - 1, 1.0), 1.0) * d / n ** 2
    p = n_g / 1.0
    cov = np.einsum("t,tg->g", factor * n, p)  # diagonal part: sum factor n n_g
    v = np.diag(cov) - np.einsum("t,tg,th->gh", factor, p, p)
    return z, v


def chi2_test(z: np.ndarray, v: np.ndarray) -> dict:
    """{"statistic", "df", "p"} of Z' V^+ Z over the first k - 1 groups (lifelines' pinv)."""
    k = len(z)
    if k < 2:
        return {"statistic": None, "df": 0, "p": None}
    stat = float(z[:-1] @ np.linalg.pinv(v[:-1, :-1]) @ z[:-1])
    return {"statistic": stat, "df": k - 1, "p": float(stats.chi2.sf(stat, k - 1))}
