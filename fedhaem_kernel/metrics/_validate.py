"""Input checks shared by the survival metrics."""
from __future__ import annotations

import numpy as np


def survival_arrays(durations, events, *others, names=("risk",)):
    """Validate (n,) durations, (n,) 0/1 events and further (n,) arrays; float/bool arrays out."""
    t = np.asarray(durations, dtype=float).ravel()
    e_raw = np.asarray(events).ravel()
    n = t.shape[0]
    if e_raw.shape[0] != n:
        raise ValueError(f"events has {e_raw.shape[0]} values, durations has {n}")
    if not np.all(np.isfinite(t)):
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"durations[{bad}] is not finite ({t[bad]})")
    if np.any(t < 0):
        bad = int(np.flatnonzero(t < 0)[0])
        raise ValueError(f"durations[{bad}] is negative ({t[bad]})")
    e_float = e_raw.astype(float)
    if not np.all(np.isin(e_float, (0.0, 1.0))):
        bad = int(np.flatnonzero(~np.isin(e_float, (0.0, 1.0)))[0])
        raise ValueError(f"events[{bad}] is {e_raw[bad]!r}; expected 0 (censored) or 1 (event)")
    out = [t, e_float.astype(bool)]
    for name, arr in zip(names, others):
        a = np.asarray(arr, dtype=float).ravel()
        if a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} values, durations has {n}")
        if not np.all(np.isfinite(a)):
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ValueError(f"{name}[{bad}] is not finite ({a[bad]})")
        out.append(a)
    return out


def surv_matrix(surv, surv_times, n: int):
    """Validate a survival matrix of shape (n_times, n) against its increasing (n_times,) grid."""
    s = np.asarray(surv, dtype=float)
    g = np.asarray(surv_times, dtype=float).ravel()
    if s.ndim != 2:
        raise ValueError(f"surv must be 2-D (n_times, n_patients), got shape {s.shape}")
    if s.shape != (g.shape[0], n):
        raise ValueError(
            f"surv has shape {s.shape}; expected (n_times, n_patients) = ({g.shape[0]}, {n})"
            " (pass surv.T if yours is (n_patients, n_times))")
    if g.shape[0] == 0 or np.any(np.diff(g) <= 0):
        raise ValueError("surv_times must be non-empty and strictly increasing")
    if not np.all(np.isfinite(s)):
        raise ValueError("surv contains non-finite values")
    if np.any((s < 0) | (s > 1)):
        raise ValueError("surv values must be survival probabilities in [0, 1]")
    return s, g
