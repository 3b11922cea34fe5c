"""The exact Cox model's message kind (fl_engine.federation.protocol): "cox_sums", one Newton step
of the federation per round (fl_engine.analytics.cox).

A node answers with aggregates of its training split at the coefficients it was sent: counts and
risk-set sums on the study's time grid (or, stratified by hospital, its own log likelihood,
gradient and Hessian), after small-cell merging at the study's min_cell_count. The manager sums
them and takes the Newton step (`aggregate_newton`, state `CoxRoundState`). What leaves a node is
checked by `_check_cox_reply`: the arrays of that layout, finite, whole non-negative counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fl_engine.analytics.cox import (
    CoxInputError, CoxNewton, CoxSums, add_sums, check_sums_arrays, newton_terms, node_stratum, node_sums, penalise,
    time_grid,
)
from fl_engine.features import Preprocessor, survival_arrays
from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import NodeReply, NodeRequest, node_evaluate, split_holdout
from fl_engine.federation.privacy import NodeRefused, check_min_patients
from fl_engine.federation.protocol import MessageKind
from fl_engine.models.params import validate_params

KIND = "cox_sums"


def cox_settings(cfg: RunConfig) -> dict:
    """The Cox settings of a run (validated model parameters of kind "cox")."""
    return validate_params("cox", {k: v for k, v in cfg.model_params.items()})


def request_config(cfg: RunConfig) -> dict:
    """What a cox_sums request says about the layout of the answer (the node computes from its
    own approved run config; the reply check reads these)."""
    s = cox_settings(cfg)
    return {"stratified": s["stratified"], "time_step_months": s["time_step_months"]}


def _answer(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    before = {}
    if req.config.get("evaluate_incoming"):  # fused evaluation of the incoming coefficients
        before = {f"eval_{k}": v for k, v in node_evaluate(df, cfg, req.config["preprocessor"], req.arrays).items()}
    s = cox_settings(cfg)
    train, _ = split_holdout(df, cfg.holdout_fraction, cfg.seed)
    check_min_patients(len(train), cfg.min_patients_per_node, name, f"answer the {KIND} request")
    x = Preprocessor.from_dict(req.config["preprocessor"]).transform(train).astype(np.float64)
    durations, events = survival_arrays(train, cfg.use_case, cfg.endpoint)
    if len(req.arrays) != 1 or np.shape(req.arrays[0]) != (x.shape[1],):
        raise ValueError(f"{KIND}: expected the coefficients as one array of shape ({x.shape[1]},), got "
                         f"{[np.shape(a) for a in req.arrays]}")
    beta = np.asarray(req.arrays[0], dtype=np.float64)
    n_events = int(np.sum(events))
    k = cfg.min_cell_count
    if s["stratified"]:
        if k > 0 and (len(train) < k or n_events < k):
            raise NodeRefused(f"node {name} refuses the {KIND} request: its training split has {len(train)} "
                              f"patients and {n_events} events, fewer than the small-cell threshold of {k}")
        ll, g, h, n, _ = node_stratum(x, durations, events, beta)
        return NodeReply(name=name, arrays=[g, h],
                         metrics={"loglik": ll, "n_train": n, "n_events": n_events, "moved": 0, **before})
    try:
        sums = node_sums(x, durations, events, beta, time_grid(s["time_step_months"]), min_cell=k)
    except ValueError as err:
        raise NodeRefused(f"node {name} refuses the {KIND} request: {err}") from None
    return NodeReply(name=name, arrays=sums.to_arrays(),
                     metrics={"n_train": sums.n, "n_events": n_events, "moved": sums.moved, **before})


def _check_cox_reply(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    """Pooled: the five CoxSums arrays on at most the grid's length; stratified: gradient (p,) and
    Hessian (p, p). Finite numbers only; no column statistics."""
    if reply.stats is not None:
        raise ValueError(f"{kind} reply carries column statistics; only stats replies may")
    if not weight_shapes or len(weight_shapes[0]) != 1:
        raise ValueError(f"{kind} reply: the request must carry the coefficients (p,), got {weight_shapes}")
    p = int(weight_shapes[0][0])
    conf = request.config if request is not None else {}
    if conf.get("stratified"):
        shapes = [tuple(np.shape(a)) for a in reply.arrays]
        if shapes != [(p,), (p, p)] or not all(np.all(np.isfinite(a)) for a in reply.arrays):
            raise ValueError(f"{kind} reply (stratified) must be a finite gradient ({p},) and Hessian ({p}, {p}), "
                             f"got shapes {shapes}")
        return
    try:
        check_sums_arrays(reply.arrays, len(time_grid(float(conf.get("time_step_months", 1.0)))), p)
    except CoxInputError as err:
        raise ValueError(f"{kind} reply: {err}") from None


@dataclass
class CoxRoundState:
    """The manager's side of a Cox run: penalizer, stratified, the Newton state, and the nodes of
    the last step (a change of nodes restarts the step control: the objective changed)."""

    penalizer: float
    stratified: bool
    newton: CoxNewton = field(default_factory=CoxNewton)
    nodes: tuple[str, ...] = ()
    loglik: float = math.nan


def aggregate_newton(replies: dict[str, NodeReply], state: tuple) -> tuple[np.ndarray, float]:
    """(next coefficients, penalised negative log partial likelihood per event at the sent
    coefficients) from the nodes' replies; state = (sent coefficients, CoxRoundState)."""
    beta, st = state
    beta = np.asarray(beta, dtype=np.float64)
    names = tuple(sorted(replies))
    if names != st.nodes:
        st.newton, st.nodes = CoxNewton(), names
    n_total = int(sum(replies[n].metrics["n_train"] for n in names))
    n_events = float(sum(replies[n].metrics["n_events"] for n in names))
    if st.stratified:
        ll = float(sum(replies[n].metrics["loglik"] for n in names))
        g = np.sum([replies[n].arrays[0] for n in names], axis=0)
        h = np.sum([replies[n].arrays[1] for n in names], axis=0)
    else:
        sums = add_sums([CoxSums.from_arrays(replies[n].arrays, replies[n].metrics["n_train"]) for n in names])
        ll, g, h = newton_terms(sums, beta)
    ll, g, h = penalise(ll, g, h, beta, st.penalizer, n_total)
    st.loglik = ll
    return st.newton.step(beta, ll, g, h), -ll / max(n_events, 1.0)


MESSAGE_KINDS = (
    MessageKind(KIND, _answer, _check_cox_reply, aggregate=aggregate_newton,
                doc="exact Cox: aggregates of the training split at the sent coefficients (one Newton step)"),
)
