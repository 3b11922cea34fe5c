"""The numerics of a federated study as pure functions, shared by the Flower apps and the
in-process executor (so both run exactly the same code).

A study is: one preprocessing phase (nodes send column statistics, the manager merges them into
one `Preprocessor`), then rounds of train (local epochs from the global weights) and evaluate
(the new global model on each node's held-out split). Replies carry only model weights and
aggregate numbers, never rows: `check_reply_privacy` states exactly what may leave a node.

A node answers a request with the handler its kind registered in the protocol
(fl_engine.federation.protocol; the survival kinds are in fl_engine.federation.survival_kinds).
"""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fl_engine.features import Preprocessor, column_stats, merge_stats, resolve_columns, survival_arrays
from fl_engine.federation import curves
from fl_engine.federation.config import RunConfig
from fl_engine.federation.privacy import check_min_patients, clip_update, suppress_small_cell
from fl_engine.federation.protocol import PROTOCOL
from fl_engine.models import build_model
from fl_engine.scores.conventional import conventional_groups, conventional_risks
from fedhaem_kernel.metrics import harrell_c
from fedhaem_kernel.schema import get_schema

# Bin edges (months) of the federated Breslow baseline hazard: monthly up to 50 years.
BASELINE_EDGES_MONTHS = np.arange(0.0, 601.0, 1.0)


@dataclass
class NodeRequest:
    """What the manager sends a node: a phase kind, global weights (maybe none), config values."""

    kind: str
    arrays: list[np.ndarray] = field(default_factory=list)
    config: dict = field(default_factory=dict)


@dataclass
class NodeReply:
    """What a node sends back: weights (train only), scalar metrics, and for `stats` the
    column statistics (aggregate counts and sums)."""

    name: str
    arrays: list[np.ndarray] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    stats: dict | None = None


class FederationError(RuntimeError):
    """A run cannot go on (too few nodes, timeout, time limit); the message says why."""


class NodeUnreachable(TimeoutError):
    """A node's request could not be delivered or answered: the SuperLink reports the message
    expired unanswered or the node offline (no heartbeat). Like a missed deadline, the study
    loop leaves that node out of the rest of the run."""


# --- node side -----------------------------------------------------------------------------

def split_holdout(df: pd.DataFrame, holdout_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out) rows, seeded; the held-out part has round(n * fraction) rows, >= 1."""
    n = len(df)
    if n < 2:
        raise ValueError(f"need at least 2 rows to split off a held-out set, got {n}")
    k = min(max(int(round(n * holdout_fraction)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return df.iloc[np.sort(perm[k:])], df.iloc[np.sort(perm[:k])]


def node_columns(df: pd.DataFrame, cfg: RunConfig) -> list[str]:
    """Feature columns this node contributes (explicit features, else the schema groups present)."""
    return resolve_columns(get_schema(cfg.use_case), df.columns, cfg.feature_groups or None,
                           list(cfg.features) or None)


def node_stats(df: pd.DataFrame, cfg: RunConfig) -> dict:
    """Column statistics of the node's training split (JSON, aggregate only)."""
    train, _ = split_holdout(df, cfg.holdout_fraction, cfg.seed)
    return column_stats(train, node_columns(df, cfg), get_schema(cfg.use_case))


def node_seed(cfg: RunConfig, round_: int, name: str) -> int:
    """Seed of one node's local training in one round (independent of Flower node ids)."""
    return zlib.crc32(f"{cfg.seed}:{round_}:{name}".encode()) & 0x7FFFFFFF


def node_train(df: pd.DataFrame, cfg: RunConfig, preprocessor: dict, weights: list[np.ndarray],
               round_: int, name: str) -> tuple[list[np.ndarray], dict]:
    """Local training from the global `weights`; returns (new weights, {n_train, n_events, loss,
    train_time_s}); train_time_s is the wall time of encoding + local epochs (seconds). Refuses
    (NodeRefused) below cfg.min_patients_per_node; with cfg.dp_enabled the update is clipped to
    L2 norm cfg.dp_clip_norm before it leaves the node."""
    t0 = time.perf_counter()
    pre = Preprocessor.from_dict(preprocessor)
    train, _ = split_holdout(df, cfg.holdout_fraction, cfg.seed)
    check_min_patients(len(train), cfg.min_patients_per_node, name)
    x = pre.transform(train)
    durations, events = survival_arrays(train, cfg.use_case, cfg.endpoint)
    model = build_model(cfg.model, x.shape[1], cfg.model_params)
    model.set_weights(weights)
    out = model.fit(x, durations, events, epochs=cfg.local_epochs, seed=node_seed(cfg, round_, name))
    loss = float(out.get("loss", float("nan")))
    new = model.get_weights()
    if cfg.dp_enabled:
        new = clip_update(weights, new, cfg.dp_clip_norm)
    return new, {"n_train": int(len(train)), "n_events": int(events.sum()), "loss": loss,
                 "train_time_s": time.perf_counter() - t0}


def _global_model_on(df: pd.DataFrame, cfg: RunConfig, preprocessor: dict, weights: list[np.ndarray],
                     part: str):
    """(model with the global weights, x, durations, events) on the node's train or holdout split."""
    train, hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)
    rows = train if part == "train" else hold
    x = Preprocessor.from_dict(preprocessor).transform(rows)
    durations, events = survival_arrays(rows, cfg.use_case, cfg.endpoint)
    model = build_model(cfg.model, x.shape[1], cfg.model_params)
    model.set_weights(weights)
    return model, x, durations, events


def node_evaluate(df: pd.DataFrame, cfg: RunConfig, preprocessor: dict,
                  weights: list[np.ndarray]) -> dict:
    """Harrell's C of the global model on the node's held-out split: {n_holdout, n_events, c_index};
    {n_holdout, c_index_suppressed: 1} when the split has fewer than cfg.min_cell_count patients
    or events (small-cell suppression: the index and the event count are not reported)."""
    model, x, durations, events = _global_model_on(df, cfg, preprocessor, weights, "holdout")
    if suppress_small_cell(int(len(x)), int(events.sum()), cfg.min_cell_count):
        return {"n_holdout": int(len(x)), "c_index_suppressed": 1}
    c = harrell_c(durations, events, model.predict_risk(x))
    return {"n_holdout": int(len(x)), "n_events": int(events.sum()), "c_index": float(c)}


def node_reference(df: pd.DataFrame, cfg: RunConfig, preprocessor: dict, initial: list[np.ndarray],
                   name: str, final: list[np.ndarray] | None = None, baseline: dict | None = None
                   ) -> tuple[dict, list[np.ndarray]]:
    """What the comparison page sets beside the federated model, on the node's held-out split:
    the same model trained on this node's patients only (from the same initial weights, the same
    rounds x local_epochs schedule and seeds: FedAvg over this one node), and the use case's
    conventional scores (fl_engine.scores.conventional; lesions the table declares not tested
    read by each score's rules). Returns (scalars {isolated_c_index, n_holdout, <score>_c_index,
    <score>_n} (Harrell's C; <score>_n = held-out patients the score was computable on),
    [Kaplan-Meier counts by risk group (fl_engine.federation.curves), when the `final` global
    weights are given]). Small cells (cfg.min_cell_count = k): a score computable on 1 to k - 1
    patients reports neither its count nor its C but <score>_suppressed = 1; its C is left out
    when the computable patients hold fewer than k events."""
    pre = Preprocessor.from_dict(preprocessor)
    train, hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)
    x = pre.transform(train)
    durations, events = survival_arrays(train, cfg.use_case, cfg.endpoint)
    model = build_model(cfg.model, x.shape[1], cfg.model_params)
    model.set_weights(initial)
    for r in range(1, cfg.num_rounds + 1):
        model.fit(x, durations, events, epochs=cfg.local_epochs, seed=node_seed(cfg, r, name))
    xh = pre.transform(hold)
    dh, eh = survival_arrays(hold, cfg.use_case, cfg.endpoint)
    out = {"n_holdout": int(len(hold)), "isolated_c_index": float(harrell_c(dh, eh, model.predict_risk(xh)))}
    for score, risk in conventional_risks(hold.reset_index(drop=True), cfg.use_case).items():
        ok = ~np.isnan(risk)
        n_ok, events_ok = int(ok.sum()), int(eh[ok].sum())
        if 0 < n_ok < cfg.min_cell_count:  # the count itself is a small cell
            out[f"{score}_suppressed"] = 1
            continue
        out[f"{score}_n"] = n_ok
        if n_ok >= 2 and events_ok > 0 and not suppress_small_cell(n_ok, events_ok, cfg.min_cell_count):
            out[f"{score}_c_index"] = float(harrell_c(dh[ok], eh[ok], risk[ok]))
    if final is None:
        return out, []
    model.set_weights(final)
    if baseline and hasattr(model, "set_baseline"):
        model.set_baseline(np.asarray(baseline["times"]), np.asarray(baseline["cumhaz"]))
    rows = curves.layout(cfg.use_case)
    counts = np.zeros((len(rows), 2, len(curves.CURVE_EDGES_MONTHS) - 1))
    try:
        s24 = model.predict_survival(xh, np.array([curves.MODEL_HORIZON_MONTHS]))[:, 0]
    except RuntimeError:  # no baseline hazard: no model groups
        s24 = None
    parts = {"model": (curves.model_groups(s24), len(curves.MODEL_GROUPS))} if s24 is not None else {}
    groups = conventional_groups(hold.reset_index(drop=True), cfg.use_case)
    parts.update({k: (v, sum(1 for r in rows if r[0] == k)) for k, v in groups.items()})
    suppressed = 0
    for score, (g, n_groups) in parts.items():
        start = next(i for i, r in enumerate(rows) if r[0] == score)
        c, s = curves.group_counts(dh, eh, g, n_groups, cfg.min_cell_count)
        counts[start:start + n_groups] = c
        suppressed += s
    out["curve_groups_suppressed"] = suppressed
    return out, [counts]


def node_baseline(df: pd.DataFrame, cfg: RunConfig, preprocessor: dict,
                  weights: list[np.ndarray]) -> list[np.ndarray]:
    """Binned Breslow sums of the global model on the node's training split, per month bin k of
    BASELINE_EDGES_MONTHS: [events in bin k, sum of exp(risk) over patients at risk at the bin's
    start]; two arrays of shape (n_bins,). Sums over nodes equal the pooled sums exactly."""
    model, x, durations, events = _global_model_on(df, cfg, preprocessor, weights, "train")
    return baseline_sums(durations, events, model.predict_risk(x))


def baseline_sums(durations: np.ndarray, events: np.ndarray, risk: np.ndarray) -> list[np.ndarray]:
    """(events per bin, sum of exp(risk) at risk at each bin's start); durations in months."""
    n_bins = len(BASELINE_EDGES_MONTHS) - 1
    idx = np.clip(np.searchsorted(BASELINE_EDGES_MONTHS, np.asarray(durations, float), side="right") - 1,
                  0, n_bins - 1)
    ev = np.asarray(events) > 0
    d = np.bincount(idx[ev], minlength=n_bins).astype(np.float64)
    per_bin = np.bincount(idx, weights=np.exp(np.clip(np.asarray(risk, float), -50, 50)), minlength=n_bins)
    at_risk = per_bin[::-1].cumsum()[::-1]  # patients whose time falls in bin k or later
    return [d, at_risk]


def merge_baseline(parts: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum the nodes' binned Breslow sums -> (times in months, baseline cumulative hazard)."""
    d = np.sum([p[0] for p in parts], axis=0)
    at_risk = np.sum([p[1] for p in parts], axis=0)
    hazard = np.divide(d, at_risk, out=np.zeros_like(d), where=at_risk > 0)
    return BASELINE_EDGES_MONTHS[1:].copy(), np.cumsum(hazard)


def small_holdout(df: pd.DataFrame, cfg: RunConfig) -> bool:
    """True when the held-out split is under the small-cell threshold (patients or events)."""
    if cfg.min_cell_count <= 0:
        return False
    _, hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)
    _, events = survival_arrays(hold, cfg.use_case, cfg.endpoint)
    return suppress_small_cell(int(len(hold)), int(events.sum()), cfg.min_cell_count)


def handle_request(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """Answer one request on a node's table (what the ClientApp and the in-process node run): the
    handler of its kind in the protocol; ValueError naming the known kinds for an unknown one."""
    return PROTOCOL.handle(df, cfg, req, name)


def check_reply_privacy(kind: str, reply: NodeReply, weight_shapes: list[tuple] | None,
                        request: NodeRequest | None = None) -> None:
    """Raise ValueError unless the reply holds only what a reply of `kind` may carry (the check
    its kind registered in the protocol, after scalar metrics): for survival kinds model weights
    of `weight_shapes`, scalar metrics and aggregate statistics; `request` is the request
    answered (sd_sharing's row limits). An unknown kind is refused."""
    PROTOCOL.check_reply(kind, reply, weight_shapes, request)


# --- manager side --------------------------------------------------------------------------

def build_preprocessor(cfg: RunConfig, stats: list[dict]) -> Preprocessor:
    """Federation-wide Preprocessor from the nodes' column statistics."""
    merged = merge_stats(stats)
    if not merged["columns"]:
        raise FederationError("no feature column found on any node for the requested features/groups")
    pre = Preprocessor.from_stats(cfg.use_case, merged)
    if not pre.columns:
        raise FederationError("every requested feature is missing for every patient on every node: "
                              + ", ".join(merged["columns"]))
    return pre


def initial_weights(cfg: RunConfig, n_features: int) -> list[np.ndarray]:
    """Seeded initial global weights of the configured model."""
    import torch  # here, not at the top: a node answering a stats request never loads torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, n_features, cfg.model_params).get_weights()


def fedavg(weights: list[list[np.ndarray]], counts: list[float]) -> list[np.ndarray]:
    """Weighted average of K models (each a list of arrays) by `counts` (patients); McMahan et
    al., AISTATS 2017. Arrays are combined in the given order, in float64, returned as float32."""
    if not weights or len(weights) != len(counts):
        raise ValueError(f"fedavg: {len(weights)} models for {len(counts)} counts")
    total = float(sum(counts))
    if not total > 0 or any(c < 0 for c in counts):
        raise ValueError(f"fedavg: counts must be non-negative with a positive sum, got {counts}")
    n_layers = len(weights[0])
    if any(len(w) != n_layers for w in weights):
        raise ValueError("fedavg: models have different numbers of arrays")
    out = []
    for i in range(n_layers):
        acc = np.zeros(np.shape(weights[0][i]), dtype=np.float64)
        for w, c in zip(weights, counts):
            if np.shape(w[i]) != acc.shape:
                raise ValueError(f"fedavg: array {i} has shape {np.shape(w[i])}, expected {acc.shape}")
            acc += (c / total) * np.asarray(w[i], dtype=np.float64)
        out.append(acc.astype(np.asarray(weights[0][i]).dtype))
    return out


def select_nodes(names: list[str], fraction: float, min_nodes: int, seed: int, round_: int) -> list[str]:
    """Seeded choice of ceil(fraction * n) nodes (at least min_nodes), by name, sorted."""
    names = sorted(names)
    k = min(len(names), max(int(math.ceil(fraction * len(names))), min_nodes))
    if k >= len(names):
        return names
    rng = np.random.default_rng([seed, round_])
    return sorted(rng.choice(names, size=k, replace=False).tolist())


def weighted_mean(values: list[float], weights: list[float]) -> float:
    """Mean of finite values weighted by `weights`; nan when none is finite."""
    pairs = [(v, w) for v, w in zip(values, weights) if math.isfinite(v) and w > 0]
    tot = sum(w for _, w in pairs)
    return float(sum(v * w for v, w in pairs) / tot) if tot > 0 else float("nan")


def round_metrics(train: dict[str, dict], evaluation: dict[str, dict]) -> list[dict]:
    """Per-node and global metrics of one round: global loss weighted by training patients,
    global C-index weighted by held-out patients over the nodes that reported one (a node under
    small-cell suppression gets c_index_suppressed = 1 instead). Keys of the inputs are node names."""
    out = []
    for name in sorted(train):
        m = train[name]
        out.append({"node": name, "name": "loss", "value": float(m["loss"])})
        out.append({"node": name, "name": "n_train", "value": float(m["n_train"])})
        if "train_time_s" in m:
            out.append({"node": name, "name": "train_time_s", "value": float(m["train_time_s"])})
    for name in sorted(evaluation):
        m = evaluation[name]
        if "c_index" in m:
            out.append({"node": name, "name": "c_index", "value": float(m["c_index"])})
        else:
            out.append({"node": name, "name": "c_index_suppressed", "value": 1.0})
        out.append({"node": name, "name": "n_holdout", "value": float(m["n_holdout"])})
    out.append({"node": "global", "name": "loss", "value": weighted_mean(
        [train[n]["loss"] for n in train], [train[n]["n_train"] for n in train])})
    out.append({"node": "global", "name": "c_index", "value": weighted_mean(
        [evaluation[n]["c_index"] for n in evaluation if "c_index" in evaluation[n]],
        [evaluation[n]["n_holdout"] for n in evaluation if "c_index" in evaluation[n]])})
    out.append({"node": "global", "name": "n_nodes_trained", "value": float(len(train))})
    return out
