"""Exact federated Cox proportional hazards: Newton-Raphson on the L2-penalised Breslow partial
likelihood, from aggregates each hospital computes on its own rows.

Pooled log partial likelihood (Breslow ties), on a time grid t_0 < t_1 < ... (months):

    l(b) = sum_i events_i x_i.b - sum_j d_j log S0_j(b) - (penalizer * N / 2) ||b||^2

with d_j the events at grid time j and S0_j, S1_j, S2_j the risk-set sums of exp(x.b), x exp(x.b)
and x x' exp(x.b) over the patients still at risk at t_j (time >= t_j). Every one of these is a
sum over patients, so each hospital sends, per Newton iteration (`node_sums`):
event counts per grid time, the three risk-set sums per grid time, the sum of its events' x
(one vector: Breslow's gradient needs only the total), and its patient count. The manager adds
them (`add_sums`) and takes the step (`newton_terms`, `CoxNewton`). With the grid equal to the
distinct event times of the pooled data this is the pooled fit exactly; a coarser grid (months)
treats the times within a grid step as tied (`time_grid`). The penalty scales with the pooled
patient count N, as lifelines' ``penalizer`` does, so one value fits any federation size.

Stratified by hospital (`stratified=True`): each hospital's risk sets hold its own patients only,
so it computes its own log likelihood, gradient and Hessian on its exact times (`node_stratum`),
which never leave it; the manager adds them.

Small-cell suppression (`min_cell`): a hospital never sends a grid step whose difference from the
next one describes fewer than `min_cell` of its patients. It merges consecutive grid steps of its
own until each merged step holds at least `min_cell` patients leaving the risk set and either no
event or at least `min_cell` events, and places them at the merged step's first grid time (its
times are coarsened, nothing else changes); how many patients it moved is reported. No raw time,
no patient row leaves a hospital: counts and sums on the grid only.

Pure numpy, no torch: issue 17's federated analytics and the "cox" survival model both use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Default grid of the federation: one step per month up to 50 years (months).
DEFAULT_STEP_MONTHS = 1.0
DEFAULT_HORIZON_MONTHS = 600.0


class CoxInputError(ValueError):
    """Bad input to a Cox computation; the message names the argument and the reason."""


def time_grid(step_months: float = DEFAULT_STEP_MONTHS, horizon_months: float = DEFAULT_HORIZON_MONTHS) -> np.ndarray:
    """Grid times 0, step, 2 step, ... < horizon (months); patients beyond the horizon stay in the
    last step."""
    if not (isinstance(step_months, (int, float)) and math.isfinite(step_months) and step_months > 0):
        raise CoxInputError(f"time grid step must be a positive number of months, got {step_months!r}")
    if not (math.isfinite(horizon_months) and horizon_months > step_months):
        raise CoxInputError(f"time grid horizon must exceed the step ({step_months} months), got {horizon_months!r}")
    return np.arange(0.0, float(horizon_months), float(step_months))


def _check(x, durations, events, beta=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    d = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events, dtype=np.float64)
    if x.ndim != 2:
        raise CoxInputError(f"x must be a matrix (patients, features), got shape {x.shape}")
    if d.shape != (len(x),) or e.shape != (len(x),):
        raise CoxInputError(f"durations {d.shape} and events {e.shape} must be ({len(x)},) like x's rows")
    if not np.all(np.isfinite(x)):
        raise CoxInputError("x holds NaN or infinite values (encode missing values first)")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise CoxInputError("durations must be finite and >= 0 (months)")
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise CoxInputError("events must be 0 (censored) or 1 (event)")
    if beta is not None and np.shape(beta) != (x.shape[1],):
        raise CoxInputError(f"coefficients have shape {np.shape(beta)}, expected ({x.shape[1]},)")
    return x, d, e


# --- what a hospital computes -------------------------------------------------------------------

@dataclass
class CoxSums:
    """One hospital's (or the summed) aggregates on a grid of K times, features p:
    events (K,), s0 (K,), s1 (K, p), s2 (K, p, p) risk-set sums at each grid time, x_events (p,)
    the sum of the events' x, n patients, moved: patients whose time small-cell merging moved."""

    events: np.ndarray
    s0: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    x_events: np.ndarray
    n: int
    moved: int = 0

    def to_arrays(self) -> list[np.ndarray]:
        """[events, s0, s1, s2, x_events] (what a reply carries; trailing empty grid steps cut)."""
        return [self.events, self.s0, self.s1, self.s2, self.x_events]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], n: int, moved: int = 0) -> "CoxSums":
        check_sums_arrays(arrays)
        ev, s0, s1, s2, xe = (np.asarray(a, dtype=np.float64) for a in arrays)
        return cls(ev, s0, s1, s2, xe, int(n), int(moved))


def check_sums_arrays(arrays: list[np.ndarray], n_grid: int | None = None, p: int | None = None) -> None:
    """CoxInputError unless `arrays` are [events (K,), s0 (K,), s1 (K, p), s2 (K, p, p),
    x_events (p,)] with whole non-negative event counts, s0 >= 0, everything finite, and
    (when given) K <= n_grid and p features."""
    if not isinstance(arrays, (list, tuple)) or len(arrays) != 5:
        raise CoxInputError(f"Cox sums are 5 arrays (events, s0, s1, s2, x_events), got "
                            f"{len(arrays) if isinstance(arrays, (list, tuple)) else type(arrays).__name__}")
    ev, s0, s1, s2, xe = (np.asarray(a) for a in arrays)
    k = ev.shape[0] if ev.ndim == 1 else -1
    q = xe.shape[0] if xe.ndim == 1 else -1
    shapes = [a.shape for a in (ev, s0, s1, s2, xe)]
    if k < 0 or q < 1 or shapes != [(k,), (k,), (k, q), (k, q, q), (q,)]:
        raise CoxInputError(f"Cox sums have shapes {shapes}; expected (K,), (K,), (K, p), (K, p, p), (p,)")
    if n_grid is not None and k > n_grid:
        raise CoxInputError(f"Cox sums cover {k} grid times, more than the grid's {n_grid}")
    if p is not None and q != p:
        raise CoxInputError(f"Cox sums have {q} features, the model has {p}")
    for name, a in zip(("events", "s0", "s1", "s2", "x_events"), (ev, s0, s1, s2, xe)):
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise CoxInputError(f"Cox sums: {name} holds non-numeric or non-finite values")
    if np.any(ev < 0) or np.any(ev != np.round(ev)):
        raise CoxInputError("Cox sums: event counts must be whole numbers >= 0")
    if np.any(s0 < 0):
        raise CoxInputError("Cox sums: s0 (risk-set sums of exp(x.b)) must be >= 0")


def grid_index(durations, edges) -> np.ndarray:
    """Index of the grid time each duration falls on or after (-1 before the first one)."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) <= 0):
        raise CoxInputError("the time grid must be a non-empty increasing list of times (months)")
    return np.searchsorted(edges, np.asarray(durations, dtype=np.float64), side="right") - 1


def merge_small_cells(index: np.ndarray, events: np.ndarray, n_grid: int, min_cell: int) -> tuple[np.ndarray, int]:
    """Coarsen one hospital's grid indices so that every grid step it reports differs from the
    next by >= min_cell patients and by 0 or >= min_cell events (module docstring). Returns
    (new index per patient, patients moved). ValueError when all its patients together are
    fewer than min_cell (it cannot report at all)."""
    if min_cell <= 0:
        return index, 0
    inside = index >= 0
    exits = np.bincount(index[inside], minlength=n_grid)
    evs = np.bincount(index[inside & (events > 0)], minlength=n_grid)
    start_of = np.arange(n_grid)
    groups: list[list[int]] = []  # [start, end] of each closed group, bins with exits only matter
    open_start, n_open, e_open = None, 0, 0
    for j in np.flatnonzero(exits):
        if open_start is None:
            open_start = j
        n_open += exits[j]
        e_open += evs[j]
        if n_open >= min_cell and (e_open == 0 or e_open >= min_cell):
            groups.append([open_start, j])
            open_start, n_open, e_open = None, 0, 0
    if open_start is not None:  # a tail too small: it joins the group before it
        if not groups:
            raise ValueError(f"{int(inside.sum())} patients ({int(evs.sum())} events) are fewer than the "
                             f"small-cell threshold of {min_cell}: no grid step can be reported")
        groups[-1][1] = int(np.flatnonzero(exits)[-1])
    for a, b in groups:
        start_of[a:b + 1] = a
    new = np.where(inside, start_of[np.clip(index, 0, None)], -1)
    return new, int(np.sum(new != index))


def node_sums(x, durations, events, beta, edges, min_cell: int = 0) -> CoxSums:
    """One hospital's aggregates (CoxSums) at coefficients `beta` (p,) on grid `edges` (months):
    x (n, p) encoded features, durations (n,) months, events (n,) 0/1. Trailing grid times at
    which none of its patients is at risk are cut."""
    x, d, e = _check(x, durations, events, beta)
    beta = np.asarray(beta, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    idx = grid_index(d, edges)
    idx, moved = merge_small_cells(idx, e, len(edges), int(min_cell))
    inside = idx >= 0
    k = int(idx.max()) + 1 if inside.any() else 0
    p = x.shape[1]
    w = np.exp(x[inside] @ beta)
    ii = idx[inside]
    ev = np.bincount(ii[e[inside] > 0], minlength=k).astype(np.float64)[:k]
    # per grid step (patients leaving the risk set there), then cumulated from the last step
    s0 = np.bincount(ii, weights=w, minlength=k)[:k]
    xw = x[inside] * w[:, None]
    s1 = np.zeros((k, p))
    np.add.at(s1, ii, xw)
    s2 = np.zeros((k, p, p))
    # one p x p product per grid step with exits (memory K p^2, not n p^2)
    order = np.argsort(ii, kind="stable")
    steps, starts = np.unique(ii[order], return_index=True)
    xs, xws = x[inside][order], xw[order]
    for j, a, b in zip(steps, starts, np.append(starts[1:], len(order))):
        s2[j] = xws[a:b].T @ xs[a:b]
    s0, s1, s2 = (a[::-1].cumsum(axis=0)[::-1] for a in (s0, s1, s2))
    x_events = x[inside & (e > 0)].sum(axis=0) if p else np.zeros(0)
    return CoxSums(ev, s0, s1, s2, x_events, n=int(len(x)), moved=moved)


def add_sums(parts: list[CoxSums]) -> CoxSums:
    """Sum hospitals' CoxSums (grids padded to the longest); equals the pooled sums exactly."""
    if not parts:
        raise CoxInputError("no Cox sums to add")
    k = max(len(s.events) for s in parts)
    p = len(parts[0].x_events)
    if any(len(s.x_events) != p for s in parts):
        raise CoxInputError(f"Cox sums disagree on the number of features: {[len(s.x_events) for s in parts]}")
    out = CoxSums(np.zeros(k), np.zeros(k), np.zeros((k, p)), np.zeros((k, p, p)), np.zeros(p), 0, 0)
    for s in parts:
        m = len(s.events)
        out.events[:m] += s.events
        out.s0[:m] += s.s0
        out.s1[:m] += s.s1
        out.s2[:m] += s.s2
        out.x_events += s.x_events
        out.n += s.n
        out.moved += s.moved
    return out


def newton_terms(s: CoxSums, beta) -> tuple[float, np.ndarray, np.ndarray]:
    """Unpenalised (log partial likelihood, gradient (p,), Hessian (p, p)) at `beta` from summed
    (or one stratum's) CoxSums."""
    beta = np.asarray(beta, dtype=np.float64)
    j = s.events > 0
    if np.any(s.s0[j] <= 0):
        raise CoxInputError("an event at a grid time with an empty risk set: the sums are inconsistent")
    d, s0, s1, s2 = s.events[j], s.s0[j], s.s1[j], s.s2[j]
    mean = s1 / s0[:, None]
    ll = float(s.x_events @ beta - np.sum(d * np.log(s0)))
    grad = s.x_events - (d[:, None] * mean).sum(axis=0)
    hess = -(np.einsum("k,kab->ab", d / s0, s2) - np.einsum("k,ka,kb->ab", d, mean, mean))
    return ll, grad, hess


def node_stratum(x, durations, events, beta) -> tuple[float, np.ndarray, np.ndarray, int, int]:
    """Stratified by hospital: this hospital's own exact Breslow (log partial likelihood,
    gradient, Hessian, patients, events) at `beta`, on its own event times (which stay here)."""
    x, d, e = _check(x, durations, events, beta)
    times = np.unique(d[e > 0])
    if times.size == 0:
        p = x.shape[1]
        return 0.0, np.zeros(p), np.zeros((p, p)), int(len(x)), 0
    ll, g, h = newton_terms(node_sums(x, d, e, beta, times), beta)
    return ll, g, h, int(len(x)), int(e.sum())


# --- what the manager does --------------------------------------------------------------------

def penalise(ll: float, grad: np.ndarray, hess: np.ndarray, beta, penalizer: float, n_total: int
             ) -> tuple[float, np.ndarray, np.ndarray]:
    """Add the L2 penalty (penalizer * n_total / 2) ||b||^2 (lifelines' convention)."""
    beta = np.asarray(beta, dtype=np.float64)
    lam = float(penalizer) * float(n_total)
    return (ll - 0.5 * lam * float(beta @ beta), grad - lam * beta,
            hess - lam * np.eye(len(beta)))


@dataclass
class CoxNewton:
    """The manager's Newton-Raphson state: `step(beta, ll, grad, hess)` with penalised terms at
    `beta` returns the next coefficients. A step that lowered the penalised log likelihood is
    halved back towards the previous point instead (one more exchange), so every accepted point
    improves the objective. Converged when the Newton step's norm is below `tol`."""

    tol: float = 1e-9
    max_halvings: int = 20
    prev_beta: np.ndarray | None = None
    prev_ll: float = -math.inf
    halvings: int = 0
    converged: bool = False
    last_ll: float = math.nan
    history: list[float] = field(default_factory=list)

    def step(self, beta, ll: float, grad: np.ndarray, hess: np.ndarray) -> np.ndarray:
        beta = np.asarray(beta, dtype=np.float64)
        self.last_ll = ll
        self.history.append(ll)
        if self.prev_beta is not None and ll < self.prev_ll - 1e-12 * max(1.0, abs(self.prev_ll)) \
                and self.halvings < self.max_halvings:
            self.halvings += 1
            self.converged = False
            return (self.prev_beta + beta) / 2.0
        self.halvings = 0
        self.prev_beta, self.prev_ll = beta.copy(), ll
        try:
            delta = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            raise CoxInputError("the Hessian is singular (collinear features or no events); "
                                "raise the penalizer") from None
        self.converged = bool(np.linalg.norm(delta) < self.tol)
        return beta + delta


@dataclass
class CoxFit:
    """A fitted Cox model: coef (p,), se (p,) from the inverse penalised information, the
    penalised log partial likelihood, iterations, converged, patients n, events, patients whose
    time small-cell merging moved."""

    coef: np.ndarray
    se: np.ndarray
    loglik: float
    iterations: int
    converged: bool
    n: int
    n_events: int
    moved: int = 0
    covariance: np.ndarray | None = None

    def summary(self, names: list[str] | None = None) -> list[dict]:
        """One dict per coefficient: name, coef, se, hazard ratio, its 95% interval, z, p."""
        names = names or [f"x{i}" for i in range(len(self.coef))]
        out = []
        for n, b, s in zip(names, self.coef, self.se):
            z = b / s if s > 0 else math.nan
            out.append({"name": n, "coef": float(b), "se": float(s), "hr": math.exp(b),
                        "hr_lo": math.exp(b - 1.959963984540054 * s), "hr_hi": math.exp(b + 1.959963984540054 * s),
                        "z": z, "p": math.erfc(abs(z) / math.sqrt(2)) if math.isfinite(z) else math.nan})
        return out


def fit_federated(nodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], penalizer: float = 0.0,
                  edges=None, step_months: float = DEFAULT_STEP_MONTHS, stratified: bool = False,
                  min_cell: int = 0, max_iter: int = 100, tol: float = 1e-9) -> CoxFit:
    """The federated fit in one process: nodes = [(x, durations in months, events)], one per
    hospital, exchanging only the aggregates above. `edges` sets the grid (e.g. the pooled
    distinct event times, for the exact pooled fit); else a grid of `step_months`."""
    if not nodes:
        raise CoxInputError("no hospitals given")
    if penalizer < 0 or not math.isfinite(penalizer):
        raise CoxInputError(f"penalizer must be a finite number >= 0, got {penalizer!r}")
    p = np.asarray(nodes[0][0]).shape[1]
    if edges is None and not stratified:
        edges = time_grid(step_months, max(DEFAULT_HORIZON_MONTHS,
                                           max(float(np.max(n[1], initial=0.0)) for n in nodes) + step_months))
    n_total = sum(len(n[1]) for n in nodes)
    beta = np.zeros(p)
    state = CoxNewton(tol=tol)
    moved = 0
    for it in range(1, max_iter + 1):
        ll, g, h, moved = _federated_terms(nodes, beta, edges, stratified, min_cell)
        ll, g, h = penalise(ll, g, h, beta, penalizer, n_total)
        nxt = state.step(beta, ll, g, h)
        if state.converged:
            break
        beta = nxt
    # the last accepted point and its information matrix
    ll, g, h, moved = _federated_terms(nodes, beta, edges, stratified, min_cell)
    ll, g, h = penalise(ll, g, h, beta, penalizer, n_total)
    cov = np.linalg.inv(-h)
    n_events = int(sum(np.sum(n[2]) for n in nodes))
    return CoxFit(beta, np.sqrt(np.clip(np.diag(cov), 0, None)), ll, it, state.converged, n_total, n_events,
                  moved, cov)


def _federated_terms(nodes, beta, edges, stratified, min_cell):
    if stratified:
        parts = [node_stratum(x, d, e, beta) for x, d, e in nodes]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts), 0)
    s = add_sums([node_sums(x, d, e, beta, edges, min_cell) for x, d, e in nodes])
    ll, g, h = newton_terms(s, beta)
    return ll, g, h, s.moved


def event_time_grid(durations, events) -> np.ndarray:
    """The distinct event times (months): the grid on which the federated fit is the pooled fit.
    For tests and analyses where the times may be pooled; a federation uses `time_grid`."""
    d, e = np.asarray(durations, float), np.asarray(events, float)
    t = np.unique(d[e > 0])
    if t.size == 0:
        raise CoxInputError("no events: a Cox model cannot be fitted")
    return t


# --- Efron's ties (issue 17's analysis: the tie handling of lifelines' CoxPHFitter) -------------
#
# On a grid, many events share a time; Efron's approximation needs, besides the risk-set sums,
# the same sums over the events tied at each grid time: e0 (K,), e1 (K, p), e2 (K, p, p). They are
# sums over patients too, so the federated Efron fit equals the pooled one exactly:
#
#   l(b) = sum_i events_i x_i.b - sum_j sum_{l<d_j} log(S0_j - (l / d_j) e0_j)
#
# (gradient and Hessian likewise, with S1 - (l/d) e1 and S2 - (l/d) e2).

@dataclass
class EfronSums:
    """CoxSums plus the tied events' sums per grid time (e0, e1, e2)."""

    base: CoxSums
    e0: np.ndarray
    e1: np.ndarray
    e2: np.ndarray

    def to_arrays(self) -> list[np.ndarray]:
        """[events, s0, s1, s2, x_events, e0, e1, e2]."""
        return self.base.to_arrays() + [self.e0, self.e1, self.e2]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], n: int, moved: int = 0) -> "EfronSums":
        check_efron_arrays(arrays)
        base = CoxSums.from_arrays(list(arrays[:5]), n, moved)
        e0, e1, e2 = (np.asarray(a, dtype=np.float64) for a in arrays[5:])
        return cls(base, e0, e1, e2)


def check_efron_arrays(arrays, n_grid: int | None = None, p: int | None = None) -> None:
    """CoxInputError unless `arrays` are the five CoxSums arrays (check_sums_arrays) then e0 (K,),
    e1 (K, p), e2 (K, p, p), finite, e0 >= 0, and e0 = 0 where no event."""
    if not isinstance(arrays, (list, tuple)) or len(arrays) != 8:
        raise CoxInputError("Efron sums are 8 arrays (events, s0, s1, s2, x_events, e0, e1, e2)")
    check_sums_arrays(list(arrays[:5]), n_grid, p)
    ev = np.asarray(arrays[0])
    k, q = ev.shape[0], np.asarray(arrays[4]).shape[0]
    e0, e1, e2 = (np.asarray(a) for a in arrays[5:])
    if [e0.shape, e1.shape, e2.shape] != [(k,), (k, q), (k, q, q)]:
        raise CoxInputError(f"Efron sums: e0, e1, e2 have shapes {[e0.shape, e1.shape, e2.shape]}; "
                            f"expected ({k},), ({k}, {q}), ({k}, {q}, {q})")
    for name, a in (("e0", e0), ("e1", e1), ("e2", e2)):
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise CoxInputError(f"Efron sums: {name} holds non-numeric or non-finite values")
    if np.any(e0 < 0) or np.any((ev == 0) & (e0 != 0)):
        raise CoxInputError("Efron sums: e0 must be >= 0 and 0 at grid times without events")


def merge_steps(index: np.ndarray, events: np.ndarray, n_grid: int, min_cell: int) -> tuple[np.ndarray, int]:
    """The analysis' small-cell coarsening of one hospital's grid step indices (all >= 0): merge
    consecutive steps until every reported step has >= min_cell exits, and 0 or >= min_cell
    events and 0 or >= min_cell censored patients (so neither count nor their difference is a
    small cell); a too-small tail joins the steps before it. Merged patients go to the grid step
    of the run's median patient. Returns (new index, patients moved); ValueError when no reportable
    grouping exists (fewer than min_cell patients, or 1 .. min_cell - 1 events or censored in all)."""
    index = np.asarray(index, dtype=np.int64)
    if min_cell <= 0 or index.size == 0:
        return index, 0
    ev = np.bincount(index[events > 0], minlength=n_grid)
    ce = np.bincount(index[events <= 0], minlength=n_grid)

    def fine(a: int, c: int) -> bool:
        return a + c >= min_cell and (a == 0 or a >= min_cell) and (c == 0 or c >= min_cell)

    runs: list[list[int]] = []  # [start, end, events, censored]
    open_run = None
    for j in np.flatnonzero(ev + ce):
        if open_run is None:
            open_run = [int(j), int(j), 0, 0]
        open_run[1] = int(j)
        open_run[2] += int(ev[j])
        open_run[3] += int(ce[j])
        if fine(open_run[2], open_run[3]):
            runs.append(open_run)
            open_run = None
    while open_run is not None:  # the tail joins the runs before it until reportable
        if not runs:
            raise ValueError(f"{int(index.size)} patients ({int(ev.sum())} events, {int(ce.sum())} censored) cannot "
                             f"be reported without a count below the small-cell threshold of {min_cell}")
        prev = runs.pop()
        open_run = [prev[0], open_run[1], prev[2] + open_run[2], prev[3] + open_run[3]]
        if fine(open_run[2], open_run[3]):
            runs.append(open_run)
            open_run = None
    # each merged run is reported at the grid step of its (lower) median patient: less bias than
    # its first step (measured on IWG-PM, bench/analytics_equivalence.py), and no more revealing
    # (either is one of the run's patients' steps)
    counts = np.bincount(index, minlength=n_grid)
    place = np.arange(n_grid)
    for a, b, _, _ in runs:
        cum = np.cumsum(counts[a:b + 1])
        place[a:b + 1] = a + int(np.searchsorted(cum, (cum[-1] + 1) // 2))
    new = place[index]
    return new, int(np.sum(new != index))


def efron_node_sums(x, steps, events, beta, min_cell: int = 0) -> EfronSums:
    """One hospital's Efron aggregates at `beta`: x (n, p), steps (n,) the grid step index of each
    patient's time (whole numbers >= 0), events (n,) 0/1; small-cell merging as node_sums."""
    x, d, e = _check(x, steps, events, beta)
    if np.any(d != np.round(d)):
        raise CoxInputError("steps must be whole grid step indices")
    idx = d.astype(np.int64)
    k = int(idx.max()) + 1 if idx.size else 0
    idx, moved = merge_steps(idx, e, k, int(min_cell))
    beta = np.asarray(beta, dtype=np.float64)
    edges = np.arange(max(k, 1), dtype=np.float64)
    base = node_sums(x, idx.astype(np.float64), e, beta, edges, min_cell=0)
    base.moved = moved
    kk = len(base.events)
    p = x.shape[1]
    ev_rows = e > 0
    w = np.exp(x[ev_rows] @ beta)
    ii = idx[ev_rows]
    e0 = np.bincount(ii, weights=w, minlength=kk)[:kk]
    e1 = np.zeros((kk, p))
    np.add.at(e1, ii, x[ev_rows] * w[:, None])
    e2 = np.zeros((kk, p, p))
    np.add.at(e2, ii, np.einsum("na,nb->nab", x[ev_rows] * w[:, None], x[ev_rows]))
    return EfronSums(base, e0, e1, e2)


def add_efron(parts: list[EfronSums]) -> EfronSums:
    """Sum hospitals' Efron sums (grids padded to the longest): the pooled sums exactly."""
    base = add_sums([s.base for s in parts])
    k, p = len(base.events), len(base.x_events)
    e0, e1, e2 = np.zeros(k), np.zeros((k, p)), np.zeros((k, p, p))
    for s in parts:
        m = len(s.e0)
        e0[:m] += s.e0
        e1[:m] += s.e1
        e2[:m] += s.e2
    return EfronSums(base, e0, e1, e2)


def efron_terms(s: EfronSums, beta) -> tuple[float, np.ndarray, np.ndarray]:
    """Unpenalised Efron (log partial likelihood, gradient, Hessian) at `beta` from summed (or one
    stratum's) Efron sums."""
    beta = np.asarray(beta, dtype=np.float64)
    b = s.base
    j = np.flatnonzero(b.events > 0)
    d = b.events[j].astype(np.int64)
    # one row per tied event: its grid time's index and l = 0 .. d - 1
    rep = np.repeat(np.arange(len(j)), d)
    frac = (np.arange(int(d.sum())) - np.repeat(np.cumsum(d) - d, d)) / np.repeat(d, d).astype(np.float64)
    jj = j[rep]
    phi = b.s0[jj] - frac * s.e0[jj]
    if np.any(phi <= 0):
        raise CoxInputError("an event at a grid time with an empty risk set: the sums are inconsistent")
    a = b.s1[jj] - frac[:, None] * s.e1[jj]
    bb = b.s2[jj] - frac[:, None, None] * s.e2[jj]
    ll = float(b.x_events @ beta - np.sum(np.log(phi)))
    grad = b.x_events - (a / phi[:, None]).sum(axis=0)
    hess = -(np.einsum("nab,n->ab", bb, 1.0 / phi) - np.einsum("na,nb,n->ab", a, a, 1.0 / phi ** 2))
    return ll, grad, hess
