"""Federated cohort description: counts, missingness, exact pooled mean / SD, quantiles from
pooled binned counts, category frequencies; overall and by group, per hospital and pooled.

Each hospital computes, per scope ("all" and each group of the study's grouping column), one
array per column of a layout fixed by the schema and the settings (`DescribeSpec.layout`):

- scope head: [n];
- numeric column c: [n present, n missing, sum(x - m), sum((x - m)^2), merged bins, counts of a
  fixed grid of `quantile_bins` bins over the schema's [minimum, maximum]] where m is the middle
  of the schema's range (a fixed shift, so the pooled variance does not lose digits);
- categorical / binary column: [n missing, count of each schema category (binary: 0, 1)].

The manager adds them: the pooled mean m + sum / n and SD sqrt((sum2 - sum^2 / n) / (n - 1)) are
those of the pooled rows exactly; quantiles interpolate linearly inside the bin of the pooled
binned counts where the cumulative count crosses q n, so each is within one bin width of the
pooled rows' quantile (more when a hospital merged bins, below: `quantile_error` states the bound).
Values outside the schema's range are counted in the first or last bin.

Small cells (min_cell = k > 0): a count between 1 and k - 1 never leaves a hospital. It is sent
as -1 ("suppressed") instead: a scope (a group at one hospital) with fewer than k patients is
suppressed whole; a numeric column with fewer than k values sends no sums; a missing count or a
category count below k is -1. Histogram bins: consecutive non-empty bins are merged until each
merged run holds >= k values and the run's count is placed in its first bin; the widest run
(in bins) is reported and widens the quantile error bound. Pooled figures add what the hospitals
reported; where one suppressed a cell the pooled figure leaves it out and a note says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import UseCaseSchema

SUPPRESSED = -1.0
MISSING_GROUP = "(missing)"
HEAD = 5  # numeric array: n, missing, sum, sum2, merged bins, then the histogram


@dataclass(frozen=True)
class NumericSpec:
    name: str
    lo: float
    hi: float
    bins: int

    @property
    def shift(self) -> float:
        return (self.lo + self.hi) / 2.0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.bins


@dataclass(frozen=True)
class CategoricalSpec:
    name: str
    categories: tuple[str, ...]
    binary: bool


@dataclass(frozen=True)
class DescribeSpec:
    numeric: tuple[NumericSpec, ...]
    categorical: tuple[CategoricalSpec, ...]
    group_by: str  # "" = none; a column; the hospital grouping is done by the manager
    groups: tuple[str, ...]  # labels of the grouping column (+ MISSING_GROUP)

    @property
    def scopes(self) -> tuple[str, ...]:
        return ("all",) + self.groups

    def layout(self) -> list[tuple[int, ...]]:
        """Shapes of a reply's arrays, scope after scope."""
        one = [(1,)] + [(HEAD + c.bins,) for c in self.numeric] + [(1 + len(c.categories),) for c in self.categorical]
        return one * len(self.scopes)


def _labels(schema: UseCaseSchema, column: str) -> tuple[str, ...]:
    f = schema.feature(column)
    return ("0", "1") if f.kind == "binary" else tuple(f.categories)


def describe_spec(schema: UseCaseSchema, settings: dict) -> DescribeSpec:
    """The layout of a describe reply for validated analysis settings."""
    num = []
    for c in settings["numeric"]:
        f = schema.feature(c)
        lo = 0.0 if f.minimum is None else float(f.minimum)
        hi = lo + 1.0 if f.maximum is None else float(f.maximum)
        num.append(NumericSpec(c, lo, hi, int(settings["quantile_bins"])))
    cat = [CategoricalSpec(c, _labels(schema, c), schema.feature(c).kind == "binary") for c in settings["categorical"]]
    gb = settings.get("group_by", "")
    groups: tuple[str, ...] = ()
    if gb and gb != "hospital":
        groups = _labels(schema, gb) + (MISSING_GROUP,)
    return DescribeSpec(tuple(num), tuple(cat), gb if gb != "hospital" else "", groups)


def group_labels(df: pd.DataFrame, schema: UseCaseSchema, column: str) -> np.ndarray:
    """Each row's group label of a categorical or binary column (MISSING_GROUP when missing or
    not one of the schema's values)."""
    labels = _labels(schema, column)
    values = df[column] if column in df else pd.Series([np.nan] * len(df), index=df.index)
    if schema.feature(column).kind == "binary":
        v = pd.to_numeric(values, errors="coerce")
        out = np.where(v == 1, "1", np.where(v == 0, "0", MISSING_GROUP))
    else:
        s = values.astype("object")
        out = np.array([x if isinstance(x, str) and x in labels else MISSING_GROUP for x in s], dtype=object)
    return out.astype(object)


def _small(c: float, k: int) -> bool:
    return k > 0 and 0 < c < k


def merge_bins(counts: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Merge consecutive non-empty bins until each run holds >= k (a too-small tail joins the run
    before it); a run's count goes to its first bin. Returns (counts, widest run in bins; 1 when
    nothing merged)."""
    counts = np.asarray(counts, dtype=np.float64)
    if k <= 0 or counts.sum() == 0:
        return counts, 1
    nz = np.flatnonzero(counts)
    runs: list[list[int]] = []
    start, acc = None, 0.0
    for j in nz:
        if start is None:
            start = j
        acc += counts[j]
        if acc >= k:
            runs.append([start, j])
            start, acc = None, 0.0
    if start is not None:
        if not runs:
            raise ValueError(f"{int(counts.sum())} values are fewer than the small-cell threshold {k}")
        runs[-1][1] = int(nz[-1])
    out = np.zeros_like(counts)
    widest = 1
    for a, b in runs:
        out[a] = counts[a:b + 1].sum()
        widest = max(widest, b - a + 1)
    return out, widest


def _numeric_array(x: np.ndarray, n_rows: int, spec: NumericSpec, k: int) -> np.ndarray:
    x = x[np.isfinite(x)]
    n, missing = float(len(x)), float(n_rows - len(x))
    out = np.zeros(HEAD + spec.bins)
    if _small(n, k):
        out[0] = SUPPRESSED
        out[1] = SUPPRESSED if _small(missing, k) else missing
        return out
    idx = np.clip(np.floor((x - spec.lo) / spec.width).astype(np.int64), 0, spec.bins - 1)
    hist = np.bincount(idx, minlength=spec.bins).astype(np.float64)
    hist, widest = merge_bins(hist, k)
    dx = x - spec.shift
    out[:HEAD] = [n, SUPPRESSED if _small(missing, k) else missing, dx.sum(), (dx * dx).sum(), widest]
    out[HEAD:] = hist
    return out


def _categorical_array(values: pd.Series, spec: CategoricalSpec, k: int) -> np.ndarray:
    if spec.binary:
        v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        counts = [float(np.sum(v == 0)), float(np.sum(v == 1))]
    else:
        s = values.astype("object")
        counts = [float(np.sum(s == c)) for c in spec.categories]
    missing = float(len(values) - sum(counts))
    arr = np.array([missing] + counts)
    return np.where((arr > 0) & (arr < k), SUPPRESSED, arr) if k > 0 else arr


def node_describe(df: pd.DataFrame, spec: DescribeSpec, schema: UseCaseSchema, min_cell: int = 0) -> list[np.ndarray]:
    """One hospital's describe reply: arrays in `spec.layout()` order (module docstring)."""
    scopes: list[np.ndarray] = [np.ones(len(df), dtype=bool)]
    if spec.group_by:
        lab = group_labels(df, schema, spec.group_by)
        scopes += [lab == g for g in spec.groups]
    out: list[np.ndarray] = []
    for mask in scopes:
        part = df[mask]
        n = float(len(part))
        if _small(n, min_cell):
            out.append(np.array([SUPPRESSED]))
            out += [np.zeros(s) for s in spec.layout()[1:1 + len(spec.numeric) + len(spec.categorical)]]
            continue
        out.append(np.array([n]))
        for c in spec.numeric:
            x = pd.to_numeric(part[c.name], errors="coerce").to_numpy(dtype=np.float64) if c.name in part \
                else np.full(len(part), np.nan)
            out.append(_numeric_array(x, len(part), c, min_cell))
        for c in spec.categorical:
            vals = part[c.name] if c.name in part else pd.Series([np.nan] * len(part))
            out.append(_categorical_array(vals, c, min_cell))
    return out


def check_describe_arrays(arrays: list, spec: DescribeSpec, min_cell: int) -> None:
    """ValueError unless `arrays` follow `spec.layout()`, counts are whole and 0, >= min_cell or
    -1 (suppressed, only when min_cell > 0), sums finite, and a suppressed scope carries nothing."""
    shapes = spec.layout()
    got = [tuple(np.shape(a)) for a in arrays]
    if got != shapes:
        raise ValueError(f"describe reply: arrays of shapes {got[:6]}{'...' if len(got) > 6 else ''} do not "
                         f"follow the layout ({len(shapes)} arrays)")
    per = 1 + len(spec.numeric) + len(spec.categorical)

    def counts_ok(c: np.ndarray, where: str) -> None:
        if not np.all(np.isfinite(c)) or np.any(c != np.round(c)):
            raise ValueError(f"describe reply: {where}: counts must be whole numbers")
        ok = (c == 0) | (c >= max(min_cell, 1)) | ((c == SUPPRESSED) & (min_cell > 0))
        if not np.all(ok):
            raise ValueError(f"describe reply: {where}: a count below the small-cell threshold of {min_cell} "
                             f"(or negative): {sorted(set(c[~ok].tolist()))[:5]}")

    for s, scope in enumerate(spec.scopes):
        block = [np.asarray(a, dtype=np.float64) for a in arrays[s * per:(s + 1) * per]]
        counts_ok(block[0], f"scope {scope} n")
        if block[0][0] == SUPPRESSED:
            if any(np.any(a != 0) for a in block[1:]):
                raise ValueError(f"describe reply: scope {scope} is suppressed but carries figures")
            continue
        for c, a in zip(spec.numeric, block[1:1 + len(spec.numeric)]):
            counts_ok(a[:2], f"{scope}/{c.name} n, missing")
            counts_ok(a[HEAD:], f"{scope}/{c.name} histogram")
            if a[0] == SUPPRESSED:
                if np.any(a[2:] != 0):
                    raise ValueError(f"describe reply: {scope}/{c.name} is suppressed but carries sums")
                continue
            if not np.all(np.isfinite(a[2:4])) or a[3] < 0 or a[4] < 1 or a[4] != round(a[4]):
                raise ValueError(f"describe reply: {scope}/{c.name}: sums must be finite, sum of squares >= 0, "
                                 f"merged bins a whole number >= 1")
            if a[0] >= 0 and a[HEAD:].sum() != a[0]:
                raise ValueError(f"describe reply: {scope}/{c.name}: histogram total {a[HEAD:].sum():g} != n {a[0]:g}")
        for c, a in zip(spec.categorical, block[1 + len(spec.numeric):]):
            counts_ok(a, f"{scope}/{c.name} counts")


# --- the manager ------------------------------------------------------------------------------

def split_scopes(arrays: list[np.ndarray], spec: DescribeSpec) -> dict[str, list[np.ndarray]]:
    per = 1 + len(spec.numeric) + len(spec.categorical)
    return {scope: [np.asarray(a, dtype=np.float64) for a in arrays[s * per:(s + 1) * per]]
            for s, scope in enumerate(spec.scopes)}


def _count(values: list[float], where: str, notes: list[str]) -> int | None:
    """Sum of reported counts; None when every part suppressed it, and a note when some did."""
    known = [v for v in values if v != SUPPRESSED]
    if len(known) < len(values):
        notes.append(f"{where}: a count below the small-cell threshold was suppressed at "
                     f"{len(values) - len(known)} hospital(s); the figure leaves it out")
        if not known:
            return None
    return int(sum(known))


def quantile_from_bins(counts: np.ndarray, edges: np.ndarray, q: float) -> float | None:
    """The q-quantile of binned counts: linear inside the bin where the cumulative count reaches
    q n (within that bin's width of the rows' quantile)."""
    n = counts.sum()
    if n <= 0:
        return None
    target = q * n
    cum = np.cumsum(counts)
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(j, len(counts) - 1)
    before = cum[j] - counts[j]
    frac = (target - before) / counts[j] if counts[j] > 0 else 0.0
    return float(edges[j] + frac * (edges[j + 1] - edges[j]))


def summarise(parts: list[list[np.ndarray]], spec: DescribeSpec, where: str, notes: list[str]) -> dict:
    """The summary S (analysis.json layout) of one scope from the parts (one scope block per
    hospital, added)."""
    n = _count([p[0][0] for p in parts], f"{where}: n", notes)
    out: dict = {"n": n, "numeric": {}, "categorical": {}}
    if n is None:
        return out
    for i, c in enumerate(spec.numeric, start=1):
        arrs = [p[i] for p in parts if p[0][0] != SUPPRESSED]
        reported = [a for a in arrs if a[0] != SUPPRESSED]
        cn = _count([a[0] for a in arrs], f"{where}/{c.name}: values", notes) if arrs else None
        missing = _count([a[1] for a in arrs], f"{where}/{c.name}: missing", notes) if arrs else None
        hist = np.sum([a[HEAD:] for a in reported], axis=0) if reported else np.zeros(c.bins)
        s1 = float(sum(a[2] for a in reported))
        s2 = float(sum(a[3] for a in reported))
        m = float(sum(a[0] for a in reported))
        widest = max((int(a[4]) for a in reported), default=1)
        mean = c.shift + s1 / m if m > 0 else None
        sd = math.sqrt(max(s2 - s1 * s1 / m, 0.0) / (m - 1)) if m > 1 else None
        if widest > 1:
            notes.append(f"{where}/{c.name}: histogram bins merged into runs of up to {widest} bins at a hospital "
                         f"(small cells); quantiles are within {widest * c.width:g} of the pooled rows'")
        out["numeric"][c.name] = {
            "n": cn, "missing": missing, "mean": mean, "sd": sd,
            "q25": quantile_from_bins(hist, c.edges, 0.25), "median": quantile_from_bins(hist, c.edges, 0.5),
            "q75": quantile_from_bins(hist, c.edges, 0.75), "quantile_error": widest * c.width,
            "histogram": {"edges": c.edges.tolist(), "counts": [int(v) for v in hist]},
        }
    off = 1 + len(spec.numeric)
    for i, c in enumerate(spec.categorical):
        arrs = [p[off + i] for p in parts if p[0][0] != SUPPRESSED]
        if not arrs:
            out["categorical"][c.name] = {"missing": None, "counts": {k: None for k in c.categories}}
            continue
        out["categorical"][c.name] = {
            "missing": _count([a[0] for a in arrs], f"{where}/{c.name}: missing", notes),
            "counts": {cat: _count([a[1 + j] for a in arrs], f"{where}/{c.name}={cat}", notes)
                       for j, cat in enumerate(c.categories)},
        }
    return out
