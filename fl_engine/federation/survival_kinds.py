"""The survival study's message kinds (fl_engine.federation.protocol): what a node answers to
each, and what that answer may carry. Replies hold only model weights (train), aggregate numbers
(stats: column statistics; baseline: binned Breslow sums; reference: Kaplan-Meier counts by risk
group) and scalar metrics, never rows. The manager's loop (fl_engine.federation.loop) aggregates
them: FedAvg, the merged Preprocessor, the summed Breslow sums."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import (
    BASELINE_EDGES_MONTHS, NodeReply, NodeRequest, node_baseline, node_evaluate, node_reference, node_stats,
    node_train, small_holdout, split_holdout,
)
from fl_engine.federation.curves import CURVE_EDGES_MONTHS
from fl_engine.federation.privacy import check_min_patients
from fl_engine.federation.protocol import MessageKind


# --- node handlers --------------------------------------------------------------------------

def _check_training_split(df: pd.DataFrame, cfg: RunConfig, kind: str, name: str) -> None:
    """A node under cfg.min_patients_per_node refuses phases over its training split (train:
    node_train checks it)."""
    check_min_patients(len(split_holdout(df, cfg.holdout_fraction, cfg.seed)[0]), cfg.min_patients_per_node,
                       name, f"answer the {kind} request")


def _answer_stats(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    _check_training_split(df, cfg, req.kind, name)
    return NodeReply(name=name, stats=node_stats(df, cfg), metrics={"n": int(len(df))})


def _answer_train(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    before = {}
    if req.config.get("evaluate_incoming"):  # fused evaluation of the previous global model
        before = {f"eval_{k}": v for k, v in node_evaluate(df, cfg, req.config["preprocessor"], req.arrays).items()}
    w, m = node_train(df, cfg, req.config["preprocessor"], req.arrays, int(req.config["round"]), name)
    return NodeReply(name=name, arrays=w, metrics={**m, **before})


def _answer_evaluate(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    return NodeReply(name=name, metrics=node_evaluate(df, cfg, req.config["preprocessor"], req.arrays))


def _answer_baseline(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """With config "evaluate" (fused evaluation, last round), also the evaluate reply's metrics."""
    _check_training_split(df, cfg, req.kind, name)
    metrics = node_evaluate(df, cfg, req.config["preprocessor"], req.arrays) if req.config.get("evaluate") else {}
    return NodeReply(name=name, arrays=node_baseline(df, cfg, req.config["preprocessor"], req.arrays),
                     metrics=metrics)


def _answer_reference(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """arrays: the initial weights, then (with_final) the final global weights."""
    _check_training_split(df, cfg, req.kind, name)
    half = len(req.arrays) // 2 if req.config.get("with_final") else len(req.arrays)
    metrics, arrays = node_reference(df, cfg, req.config["preprocessor"], req.arrays[:half], name,
                                     final=req.arrays[half:] or None, baseline=req.config.get("baseline"))
    if small_holdout(df, cfg):  # the same small-cell rule as node_evaluate's C-index
        scores = [k[:-len("_n")] for k in metrics if k.endswith("_n")]
        metrics = {k: v for k, v in metrics.items() if not k.endswith("_c_index") and not k.endswith("_n")}
        metrics.update({f"{s}_suppressed": 1 for s in scores})  # per-score counts of a small split too
        arrays = [np.zeros_like(a) for a in arrays]
    return NodeReply(name=name, metrics=metrics, arrays=arrays)


# --- reply checks (after the protocol's: every metric a scalar number) ----------------------

def _no_arrays(kind: str, reply: NodeReply) -> None:
    if reply.arrays:
        raise ValueError(f"{kind} reply carries {len(reply.arrays)} array(s); only train, baseline and "
                         "reference (group counts) replies may")


def _no_stats(kind: str, reply: NodeReply) -> None:
    if reply.stats is not None:
        raise ValueError(f"{kind} reply carries column statistics; only stats replies may")


def _check_stats_reply(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    """Aggregate column statistics only: {"n", "columns": {name: counts or count/sum/sumsq}}."""
    _no_arrays(kind, reply)
    stats = reply.stats
    if not isinstance(stats, dict) or set(stats) != {"n", "columns"} or not _is_num(stats["n"]):
        raise ValueError("stats reply is not {'n': count, 'columns': {...}}")
    for col, c in stats["columns"].items():
        if c.get("kind") == "categorical":
            if set(c) != {"kind", "missing", "counts"} or not _is_num(c["missing"]) \
                    or not all(_is_num(v) for v in c["counts"].values()):
                raise ValueError(f"stats of column {col!r} are not category counts")
        elif set(c) != {"kind", "missing", "count", "sum", "sumsq"} or \
                not all(_is_num(c[k]) for k in ("missing", "count", "sum", "sumsq")):
            raise ValueError(f"stats of column {col!r} are not count/sum/sum of squares")


def _check_train_reply(kind: str, reply: NodeReply, weight_shapes: list[tuple] | None, request) -> None:
    """Model weights of exactly the shapes the manager sent."""
    shapes = [tuple(np.shape(a)) for a in reply.arrays]
    if weight_shapes is None or shapes != [tuple(s) for s in weight_shapes]:
        raise ValueError(f"train reply arrays {shapes} are not the model weight shapes {weight_shapes}")
    _no_stats(kind, reply)


def _check_evaluate_reply(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    """Scalar metrics only."""
    _no_arrays(kind, reply)
    _no_stats(kind, reply)


def _check_baseline_reply(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    """Two non-negative sums over the month bins of BASELINE_EDGES_MONTHS."""
    n_bins = len(BASELINE_EDGES_MONTHS) - 1
    shapes = [tuple(np.shape(a)) for a in reply.arrays]
    if shapes != [(n_bins,), (n_bins,)] or not all(np.all(np.isfinite(a)) and np.all(np.asarray(a) >= 0)
                                                  for a in reply.arrays):
        raise ValueError(f"baseline reply must be two non-negative sums over {n_bins} month bins, "
                         f"got shapes {shapes}")
    _no_stats(kind, reply)


def _check_reference_reply(kind: str, reply: NodeReply, weight_shapes, request) -> None:
    """Scalars, and at most one array of whole patient counts (groups, 2, curve bins)."""
    if reply.arrays:
        n_bins = len(CURVE_EDGES_MONTHS) - 1
        a = np.asarray(reply.arrays[0]) if len(reply.arrays) == 1 else None
        if a is None or a.ndim != 3 or a.shape[1:] != (2, n_bins) or not np.all(np.isfinite(a)) \
                or np.any(a < 0) or np.any(a != np.round(a)):
            raise ValueError(f"reference reply may carry one array of group counts (groups, 2, {n_bins}), "
                             f"got {[np.shape(x) for x in reply.arrays]}")
    _no_stats(kind, reply)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


MESSAGE_KINDS = (
    MessageKind("stats", _answer_stats, _check_stats_reply,
                doc="column statistics of the node's training split (preprocessing)"),
    MessageKind("train", _answer_train, _check_train_reply,
                doc="local epochs from the global weights (optionally evaluating them first)"),
    MessageKind("evaluate", _answer_evaluate, _check_evaluate_reply,
                doc="Harrell's C of the global model on the held-out split"),
    MessageKind("baseline", _answer_baseline, _check_baseline_reply,
                doc="binned Breslow sums of the final model (the federated baseline hazard); "
                    "with fused evaluation also the evaluate reply's metrics"),
    MessageKind("reference", _answer_reference, _check_reference_reply,
                doc="the comparison: the model trained alone, conventional scores, risk-group curves"),
)
