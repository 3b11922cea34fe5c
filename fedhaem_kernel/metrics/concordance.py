"""Concordance indices: Harrell's C, Uno's IPCW C and Antolini's time-dependent C.

Pairs follow the usual convention (Harrell 1982; lifelines, scikit-survival): (i, j) is comparable
when t_i < t_j and i had the event, or t_i == t_j with i an event and j censored (a censored
subject is taken to outlive an event at the same time). Two events at the same time are not
comparable. Times in any unit, consistent within a call.
"""
from __future__ import annotations

import numpy as np

from ._validate import surv_matrix, survival_arrays
from .km import censoring_km, step_at


def _pair_counts(t: np.ndarray, e: np.ndarray, r: np.ndarray):
    """Per subject i (events only non-zero): comparable j, concordant j (r_i > r_j), tied-risk j.

    O(n log n): subjects are visited by decreasing time while a Fenwick tree counts the risk
    ranks of those already seen (the later ones).
    """
    n = t.size
    comp = np.zeros(n)
    conc = np.zeros(n)
    ties = np.zeros(n)
    if n == 0:
        return comp, conc, ties
    _, rank = np.unique(r, return_inverse=True)
    rank = rank.astype(np.int64) + 1  # Fenwick trees are 1-based
    m = int(rank.max())
    tree = [0] * (m + 1)
    seen = 0

    def add(i: int) -> None:
        while i <= m:
            tree[i] += 1
            i += i & -i

    def below(i: int) -> int:  # count of ranks <= i
        s = 0
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    order = np.argsort(-t, kind="stable")
    ts = t[order]
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    ends = np.r_[starts[1:], n]
    rank_l = rank.tolist()
    e_l = e.tolist()
    for a, b in zip(starts.tolist(), ends.tolist()):
        group = order[a:b].tolist()
        # censored subjects at this very time count as outliving the events at this time
        for j in group:
            if not e_l[j]:
                add(rank_l[j])
                seen += 1
        for i in group:
            if e_l[i] and seen:
                ri = rank_l[i]
                lt = below(ri - 1)
                le = below(ri)
                comp[i] = seen
                conc[i] = lt
                ties[i] = le - lt
        for j in group:
            if e_l[j]:
                add(rank_l[j])
                seen += 1
    return comp, conc, ties


def harrell_c(durations, events, risk) -> float:
    """Harrell's concordance index (Harrell et al. 1982), O(n log n).

    durations (n,) any time unit, events (n,) 1 = event, risk (n,) higher = worse. Concordant when
    the earlier event has the higher risk; ties in risk count 1/2. Returns nan with no comparable
    pair. Equals ``lifelines.utils.concordance_index(durations, -risk, events)``.
    """
    t, e, r = survival_arrays(durations, events, risk, names=("risk",))
    comp, conc, ties = _pair_counts(t, e, r)
    total = comp.sum()
    return float((conc.sum() + 0.5 * ties.sum()) / total) if total else float("nan")


def uno_c(durations, events, risk, *, tau: float | None = None, train_durations=None,
          train_events=None) -> float:
    """Uno's IPCW concordance index (Uno et al., Stat Med 2011) truncated at ``tau``.

    durations/events/risk: test set, shape (n,), risk higher = worse. Each comparable pair with
    earlier event i (t_i < tau) is weighted by 1 / G(t_i)^2, G the Kaplan-Meier of the censoring
    distribution fitted on (train_durations, train_events) (default: the test set itself), events
    removed before censorings at tied times; past the last training time G keeps its last value
    (sksurv raises there). Same time unit everywhere. Equals
    ``sksurv.metrics.concordance_index_ipcw(train, test, risk, tau)`` (risk ties counted exactly,
    sksurv's default tolerance is 1e-8).
    """
    t, e, r = survival_arrays(durations, events, risk, names=("risk",))
    if (train_durations is None) != (train_events is None):
        raise ValueError("give both train_durations and train_events, or neither")
    if train_durations is None:
        train_durations, train_events = t, e
    g_times, g = censoring_km(train_durations, train_events)
    g_at = step_at(g_times, g, t)
    weight = np.zeros_like(t)
    use = e & (t < tau) if tau is not None else e.copy()
    if np.any(use & (g_at <= 0)):
        bad = int(np.flatnonzero(use & (g_at <= 0))[0])
        raise ValueError(f"censoring survival is 0 at durations[{bad}] = {t[bad]}; lower tau")
    weight[use] = 1.0 / g_at[use] ** 2
    comp, conc, ties = _pair_counts(t, e, r)
    den = float((weight * comp).sum())
    return float((weight * (conc + 0.5 * ties)).sum() / den) if den else float("nan")


def antolini_c(durations, events, surv, surv_times, *, block: int = 512) -> float:
    """Antolini's time-dependent concordance (Antolini et al., Stat Med 2005).

    surv: predicted survival, shape (n_times, n_patients) (the pycox layout; pass ``surv.T`` for
    (n_patients, n_times)), evaluated on the increasing grid surv_times (n_times,), same unit as
    durations (n,). A comparable pair (t_i < t_j, or t_i == t_j with j censored; i an event) is
    concordant when S_i(t_i) < S_j(t_i), S read at the last grid time <= t_i (first grid time if
    none). No credit for ties. Equals pycox ``EvalSurv(...).concordance_td('antolini')``.
    """
    t, e = survival_arrays(durations, events, names=())
    s, grid = surv_matrix(surv, surv_times, t.size)
    k = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, grid.size - 1)
    ev = np.flatnonzero(e)
    conc = 0.0
    comp = 0.0
    for a in range(0, ev.size, block):
        idx = ev[a:a + block]
        ti = t[idx][:, None]
        comparable = (t[None, :] > ti) | ((t[None, :] == ti) & ~e[None, :])
        rows = s[k[idx], :]
        own = rows[np.arange(idx.size), idx][:, None]
        comp += comparable.sum()
        conc += (comparable & (own < rows)).sum()
    return float(conc / comp) if comp else float("nan")
