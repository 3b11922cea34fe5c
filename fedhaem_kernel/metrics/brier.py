"""Brier score and integrated Brier score with inverse-probability-of-censoring weights."""
from __future__ import annotations

import numpy as np

from ._validate import surv_matrix, survival_arrays
from .km import censoring_km, step_at

_ESTIMATORS = ("graf", "pycox")


def _surv_at(s: np.ndarray, grid: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Rows of s (n_times, n) at times ``at``: last grid time <= t, first row before the grid."""
    k = np.clip(np.searchsorted(grid, at, side="right") - 1, 0, grid.size - 1)
    return s[k, :]


def brier_score(durations, events, surv, surv_times, eval_times=None, *, censor_durations=None,
                censor_events=None, estimator: str = "graf") -> np.ndarray:
    """IPCW Brier score at each evaluation time, shape (n_eval,).

    surv: predicted survival, shape (n_times, n_patients), on the increasing grid surv_times
    (n_times,); durations/events (n,); eval_times (n_eval,) default surv_times; one time unit.
    BS(t) = sum_i w_i(t) (1{t_i > t} - S_i(t))^2 with w = 1/G(t_i) for events t_i <= t,
    1/G(t) for t_i > t, 0 otherwise; G is the censoring Kaplan-Meier fitted on
    (censor_durations, censor_events) (default: the evaluated set).

    estimator="graf" (Graf et al., Stat Med 1999): G(t_i) right-continuous, average over n,
    as ``sksurv.metrics.brier_score``. estimator="pycox": G(t_i-) from a censoring KM that keeps
    tied events at risk, normalised by the sum of the weights, as pycox 0.3
    ``EvalSurv(..., censor_surv='km').brier_score``.
    """
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    t, e = survival_arrays(durations, events, names=())
    s, grid = surv_matrix(surv, surv_times, t.size)
    ts = grid if eval_times is None else np.asarray(eval_times, dtype=float).ravel()
    if (censor_durations is None) != (censor_events is None):
        raise ValueError("give both censor_durations and censor_events, or neither")
    if censor_durations is None:
        censor_durations, censor_events = t, e
    s_t = _surv_at(s, grid, ts)  # (n_eval, n)
    if estimator == "graf":
        g_times, g = censoring_km(censor_durations, censor_events, events_first=True)
        g_tt = step_at(g_times, g, t)
        g_ts = step_at(g_times, g, ts)
    else:
        g_times, g = censoring_km(censor_durations, censor_events, events_first=False)
        if g_times[0] > 0:
            g_times, g = np.r_[0.0, g_times], np.r_[1.0, g]
        # pycox reads G just before t_i, and clips reads before the first grid time to it
        k_tt = np.clip(np.searchsorted(g_times, t, side="left") - 1, 0, None)
        g_tt = g[k_tt]
        g_ts = g[np.clip(np.searchsorted(g_times, ts, side="right") - 1, 0, None)]
    with np.errstate(divide="ignore"):
        inv_tt = np.where(g_tt > 0, 1.0 / np.where(g_tt > 0, g_tt, 1.0), 0.0)
        inv_ts = np.where(g_ts > 0, 1.0 / np.where(g_ts > 0, g_ts, 1.0), 0.0)
    case = (t[None, :] <= ts[:, None]) & e[None, :]
    control = t[None, :] > ts[:, None]
    w = case * inv_tt[None, :] + control * inv_ts[:, None]
    err = np.where(case, s_t ** 2, (1.0 - s_t) ** 2)
    if estimator == "graf":
        return (w * err).sum(axis=1) / t.size
    wsum = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, (w * err).sum(axis=1) / wsum, np.nan)


def integrated_brier_score(durations, events, surv, surv_times, eval_times=None, *,
                           censor_durations=None, censor_events=None,
                           estimator: str = "graf") -> float:
    """Integrated IPCW Brier score over eval_times (n_eval >= 2), divided by its span; a scalar.

    Same shapes and estimators as ``brier_score``. "graf" integrates with the trapezoid rule
    (``sksurv.metrics.integrated_brier_score``); "pycox" with Simpson's rule
    (``EvalSurv.integrated_brier_score``, scipy's current ``simpson``).
    """
    ts = np.asarray(surv_times if eval_times is None else eval_times, dtype=float).ravel()
    if ts.size < 2:
        raise ValueError("integrated_brier_score needs at least two evaluation times")
    bs = brier_score(durations, events, surv, surv_times, ts, censor_durations=censor_durations,
                     censor_events=censor_events, estimator=estimator)
    span = ts[-1] - ts[0]
    if estimator == "graf":
        return float(np.trapezoid(bs, ts) / span)
    from scipy import integrate  # here: importing scipy.integrate (and scipy.optimize) costs every
    # process that merely imports the metrics ~0.2 s, a node's ClientApp among them
    return float(integrate.simpson(bs, x=ts) / span)
