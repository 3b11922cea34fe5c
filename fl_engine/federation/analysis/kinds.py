"""The analysis study's message kinds (fl_engine.federation.protocol): what a hospital answers to
each and what that answer may carry. Every answer is counts and sums on a layout fixed by the
study's approved analysis settings and the schema; never a row, never a raw time.

- analysis_describe: per scope ("all" and each group) the describe arrays
  (fl_engine.analytics.describe); metrics: n.
- analysis_km: per scope, events and censored per grid step of the study's time_step_months
  (fl_engine.analytics.km), then one 0/1 flag per scope (1 = the scope had 1 .. k - 1 patients
  or could not be reported without a small cell, so it was left out); metrics: moved.
- analysis_cox: at the coefficients sent, the Efron sums of its complete cases on the grid
  (fl_engine.analytics.cox.efron_node_sums; the same reply pooled or stratified by hospital: the
  manager adds the sums, or the terms of each hospital's own risk sets); metrics: n, events, moved.

The node computes from its own run config (the approved settings, cfg.analysis and
cfg.min_cell_count); the request carries the layout only so that the reply check (run on the
node before a reply leaves, and in the in-process executor) can hold the reply to it: the arrays
of that layout, finite, whole non-negative counts, none between 1 and k - 1 (k = min_cell_count;
-1 marks a suppressed describe count), grids no longer than the longest allowed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import get_schema
from fl_engine.analytics import km
from fl_engine.analytics.cox import CoxInputError, check_efron_arrays, efron_node_sums
from fl_engine.analytics.describe import check_describe_arrays, describe_spec, group_labels, node_describe
from fl_engine.analytics.design import design_matrix, design_terms
from fl_engine.analytics.settings import HOSPITAL
from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import NodeReply, NodeRequest
from fl_engine.federation.privacy import NodeRefused, check_min_patients
from fl_engine.federation.protocol import MessageKind

DESCRIBE, KM, COX = "analysis_describe", "analysis_km", "analysis_cox"


def request_config(cfg: RunConfig, round_: int = 0) -> dict:
    """What every analysis request carries: the round, the layout's inputs (use case, settings)
    and the small-cell threshold the reply check holds the answer to."""
    return {"round": int(round_), "use_case": cfg.use_case, "settings": cfg.analysis,
            "min_cell": int(cfg.min_cell_count)}


def _settings(cfg: RunConfig) -> dict:
    if not cfg.analysis:
        raise ValueError("this run has no analysis settings (task analysis needs the analysis setting)")
    return cfg.analysis


def _check_size(df: pd.DataFrame, cfg: RunConfig, kind: str, name: str) -> None:
    check_min_patients(len(df), cfg.min_patients_per_node, name, f"answer the {kind} request")
    k = cfg.min_cell_count
    if 0 < len(df) < k:
        raise NodeRefused(f"node {name} refuses the {kind} request: {len(df)} patients are fewer than the "
                          f"small-cell threshold of {k}")


def _durations(df: pd.DataFrame, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    ep = get_schema(cfg.use_case).endpoint(cfg.endpoint)
    for col in (ep.time_column, ep.event_column):
        if col not in df:
            raise ValueError(f"endpoint {cfg.endpoint!r} needs column {col!r}, not in the table")
    d = pd.to_numeric(df[ep.time_column], errors="coerce").to_numpy(dtype=np.float64)
    e = pd.to_numeric(df[ep.event_column], errors="coerce").to_numpy(dtype=np.float64)
    return d, e


def survival_rows(df: pd.DataFrame, cfg: RunConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows with a usable endpoint (time >= 0 and event 0/1), their durations and events."""
    d, e = _durations(df, cfg)
    ok = np.isfinite(d) & (d >= 0) & np.isin(e, (0.0, 1.0))
    return df[ok], d[ok], e[ok]


# --- describe -----------------------------------------------------------------------------------

def _answer_describe(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    _check_size(df, cfg, DESCRIBE, name)
    schema = get_schema(cfg.use_case)
    spec = describe_spec(schema, _settings(cfg))
    return NodeReply(name=name, arrays=node_describe(df, spec, schema, cfg.min_cell_count),
                     metrics={"n": int(len(df))})


def _request_spec(kind: str, request: NodeRequest | None):
    conf = request.config if request is not None else {}
    try:
        return get_schema(conf["use_case"]), conf["settings"], int(conf["min_cell"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{kind} reply: the request does not state the layout (use_case, settings, "
                         f"min_cell): {err}") from None


def _check_n(kind: str, reply: NodeReply, k: int, key: str = "n") -> None:
    n = reply.metrics.get(key)
    if not isinstance(n, (int, float)) or n != round(n) or n < 0 or (k > 0 and 0 < n < k):
        raise ValueError(f"{kind} reply: metric {key}={n!r} must be a whole count, 0 or >= {k}")


def _check_describe(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    if reply.stats is not None:
        raise ValueError(f"{kind} reply carries column statistics; only stats replies may")
    schema, settings, k = _request_spec(kind, request)
    if set(reply.metrics) != {"n"}:
        raise ValueError(f"{kind} reply: metrics must be exactly n, got {sorted(reply.metrics)}")
    _check_n(kind, reply, k)
    check_describe_arrays(reply.arrays, describe_spec(schema, settings), k)


# --- Kaplan-Meier / log-rank --------------------------------------------------------------------

def km_scopes(schema, settings: dict) -> tuple[str, ...]:
    """Scopes of a KM reply: "all", then the groups of the grouping column (none when grouping
    by hospital or not grouping)."""
    gb = settings.get("group_by", "")
    if not gb or gb == HOSPITAL:
        return ("all",)
    return ("all",) + describe_spec(schema, settings).groups


def _answer_km(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    _check_size(df, cfg, KM, name)
    settings = _settings(cfg)
    schema = get_schema(cfg.use_case)
    rows, d, e = survival_rows(df, cfg)
    scopes = km_scopes(schema, settings)
    masks = [np.ones(len(rows), dtype=bool)]
    if len(scopes) > 1:
        lab = group_labels(rows, schema, settings["group_by"])
        masks += [lab == g for g in scopes[1:]]
    arrays, flags, moved = [], [], 0
    for i, mask in enumerate(masks):
        try:
            ev, ce, m = km.node_counts(d[mask], e[mask], settings["time_step_months"], cfg.min_cell_count)
            flags.append(0.0)
            if i == 0:  # the whole cohort's curve: a count of patients (group curves are merged apart)
                moved = m
        except ValueError:  # 1 .. k - 1 patients (or events / censored in all): not reported
            ev, ce = np.zeros(0), np.zeros(0)
            flags.append(1.0)
        arrays += [ev, ce]
    if flags[0]:
        raise NodeRefused(f"node {name} refuses the {KM} request: its {int(len(rows))} patients cannot be "
                          f"reported without a count below the small-cell threshold of {cfg.min_cell_count}")
    return NodeReply(name=name, arrays=arrays + [np.array(flags)], metrics={"moved": int(moved)})


def _check_counts(kind: str, a: np.ndarray, k: int, what: str) -> None:
    a = np.asarray(a)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
        raise ValueError(f"{kind} reply: {what} must be a finite vector of counts")
    if np.any(a < 0) or np.any(a != np.round(a)):
        raise ValueError(f"{kind} reply: {what}: counts must be whole numbers >= 0")
    if k > 0 and np.any((a > 0) & (a < k)):
        raise ValueError(f"{kind} reply: {what}: a count below the small-cell threshold of {k}")


def _check_km(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    if reply.stats is not None:
        raise ValueError(f"{kind} reply carries column statistics; only stats replies may")
    schema, settings, k = _request_spec(kind, request)
    scopes = km_scopes(schema, settings)
    if len(reply.arrays) != 2 * len(scopes) + 1:
        raise ValueError(f"{kind} reply: expected {2 * len(scopes) + 1} arrays (events and censored per scope, "
                         f"then the flags), got {len(reply.arrays)}")
    if set(reply.metrics) != {"moved"}:
        raise ValueError(f"{kind} reply: metrics must be exactly moved, got {sorted(reply.metrics)}")
    longest = km.max_steps(float(settings["time_step_months"]))
    for i, scope in enumerate(scopes):
        ev, ce = (np.asarray(a) for a in reply.arrays[2 * i:2 * i + 2])
        if ev.shape != ce.shape or ev.ndim != 1 or len(ev) > longest:
            raise ValueError(f"{kind} reply: scope {scope}: events {ev.shape} and censored {ce.shape} must be two "
                             f"vectors of one length <= {longest} grid steps")
        _check_counts(kind, ev, k, f"scope {scope} events")
        _check_counts(kind, ce, k, f"scope {scope} censored")
        _check_counts(kind, ev + ce, k, f"scope {scope} exits")
    flags = np.asarray(reply.arrays[-1])
    if flags.shape != (len(scopes),) or not np.all(np.isin(flags, (0.0, 1.0))):
        raise ValueError(f"{kind} reply: flags must be {len(scopes)} zeros or ones")


# --- Cox ----------------------------------------------------------------------------------------

def cox_design(df: pd.DataFrame, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x scaled, grid steps, events) of the hospital's complete cases."""
    settings = _settings(cfg)
    rows, d, e = survival_rows(df, cfg)
    x, complete = design_matrix(rows, design_terms(get_schema(cfg.use_case), settings["covariates"]))
    return x, km.grid_steps(d[complete], settings["time_step_months"]).astype(np.float64), e[complete]


def _answer_cox(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    _check_size(df, cfg, COX, name)
    x, steps, e = cox_design(df, cfg)
    k = cfg.min_cell_count
    if len(req.arrays) != 1 or np.shape(req.arrays[0]) != (x.shape[1],):
        raise ValueError(f"{COX}: expected the coefficients as one array of shape ({x.shape[1]},), got "
                         f"{[np.shape(a) for a in req.arrays]}")
    if k > 0 and (len(x) < k or 0 < e.sum() < k):
        raise NodeRefused(f"node {name} refuses the {COX} request: {len(x)} complete cases and {int(e.sum())} "
                          f"events, below the small-cell threshold of {k}")
    try:
        sums = efron_node_sums(x, steps, e, req.arrays[0], min_cell=k)
    except ValueError as err:
        raise NodeRefused(f"node {name} refuses the {COX} request: {err}") from None
    return NodeReply(name=name, arrays=sums.to_arrays(),
                     metrics={"n": int(len(x)), "events": int(e.sum()), "moved": int(sums.base.moved)})


def _check_cox(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    if reply.stats is not None:
        raise ValueError(f"{kind} reply carries column statistics; only stats replies may")
    schema, settings, k = _request_spec(kind, request)
    if not weight_shapes or len(weight_shapes) != 1 or len(weight_shapes[0]) != 1:
        raise ValueError(f"{kind} reply: the request must carry the coefficients (p,), got {weight_shapes}")
    if set(reply.metrics) != {"n", "events", "moved"}:
        raise ValueError(f"{kind} reply: metrics must be exactly n, events, moved, got {sorted(reply.metrics)}")
    _check_n(kind, reply, k, "n")
    _check_n(kind, reply, k, "events")
    try:
        check_efron_arrays(reply.arrays, km.max_steps(float(settings["time_step_months"])), int(weight_shapes[0][0]))
    except CoxInputError as err:
        raise ValueError(f"{kind} reply: {err}") from None
    _check_counts(kind, np.asarray(reply.arrays[0]), k, "events per grid step")


MESSAGE_KINDS = (
    MessageKind(DESCRIBE, _answer_describe, _check_describe,
                doc="analysis: counts, sums and binned counts per scope and column"),
    MessageKind(KM, _answer_km, _check_km, doc="analysis: events and censored per grid step, per scope"),
    MessageKind(COX, _answer_cox, _check_cox,
                doc="analysis: Efron sums of the complete cases at the sent coefficients"),
)
