"""The manager's study loop, written once over a `Transport` (Flower's Grid in deployment, direct
calls in the in-process executor), plus the outputs the portal reads: per-round metrics (JSON
lines + optional POST) and the final model (model.npz + model.json).
"""
from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fl_engine.features import Preprocessor
from fl_engine.federation.config import RunConfig
from fl_engine.federation.curves import curves_from_counts
from fl_engine.federation.events import EventSink
from fl_engine.federation.core import (
    FederationError, NodeReply, NodeRequest, build_preprocessor, fedavg, initial_weights,
    merge_baseline, round_metrics, select_nodes,
)
from fl_engine.federation import cox_kinds
from fl_engine.federation.comparison import comparison_metrics, coverage_notes
from fl_engine.federation.privacy import add_gaussian_noise, gaussian_noise_std, noise_seed
from fl_engine.federation.protocol import PROTOCOL
from fl_engine.models import build_model

log = logging.getLogger("fedhaem.federation")


class Transport(Protocol):
    """How the manager reaches nodes; node keys are opaque strings (Flower node ids, names)."""

    def nodes(self) -> list[str]:
        """Keys of the nodes available now."""

    def request(self, requests: dict[str, NodeRequest], timeout_s: float) -> dict[str, NodeReply | Exception]:
        """Send one request per node; a reply or the error (timeout, node failure) per key."""


@dataclass
class History:
    """What a run produced: per-round metrics records, final weights, Preprocessor dict."""

    rounds: list[dict] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    preprocessor: dict = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    # Federated Breslow baseline of the final model (Cox-type models): {"times", "cumhaz"}, months.
    baseline: dict = field(default_factory=dict)
    # Kaplan-Meier curves of the pooled held-out patients by risk group (comparison phase).
    curves: dict = field(default_factory=dict)

    def model(self, cfg: RunConfig):
        """The final global model as a SurvivalModel."""
        m = build_model(cfg.model, len(Preprocessor.from_dict(self.preprocessor).output_names), cfg.model_params)
        m.set_weights(self.weights)
        if self.baseline and hasattr(m, "set_baseline"):
            m.set_baseline(np.asarray(self.baseline["times"]), np.asarray(self.baseline["cumhaz"]))
        return m


def run_federation(cfg: RunConfig, transport: Transport, sink: EventSink | None = None) -> History:
    """Preprocessing phase, then cfg.num_rounds of train + evaluate; raises FederationError.
    The final model goes to cfg.model_dir (when set) and with the "finished" event."""
    sink = sink or EventSink.from_config(cfg)
    t_end = time.monotonic() + cfg.run_timeout_s
    hist = History()
    sink.event("started")
    try:
        _run(cfg, transport, sink, hist, t_end)
        files = model_files(cfg, hist)
    except Exception as err:
        sink.event("failed", reason=str(err))
        raise
    if cfg.model_dir:
        save_model(cfg.model_dir, cfg, hist)
    sink.finished(files, rounds=cfg.num_rounds)
    return hist


def time_budget(cfg: RunConfig, t_end: float):
    """budget(what) -> seconds the next phase may wait: the round timeout, capped by what is left
    of the run's time limit (monotonic deadline `t_end`); raises FederationError past it."""
    def budget(what: str) -> float:
        left = t_end - time.monotonic()
        if left <= 0:
            raise FederationError(f"run exceeded its time limit of {cfg.run_timeout_s:g} s ({what})")
        return min(cfg.round_timeout_s, left)
    return budget


def _run(cfg: RunConfig, transport: Transport, sink: EventSink, hist: History, t_end: float) -> None:
    budget = time_budget(cfg, t_end)
    keys = wait_for_nodes(cfg, transport, budget("waiting for nodes"))
    replies = transport.request({k: NodeRequest("stats") for k in keys}, budget("preprocessing"))
    report_missed(sink, replies, "preprocessing", {p["node_id"]: p["node"] for p in cfg.participants})
    ok = successful_replies(replies, "preprocessing", cfg.min_nodes)
    names = {k: r.name for k, r in ok.items()}
    check_identities(cfg, names)
    if len(set(names.values())) != len(names):
        raise FederationError(f"two nodes report the same name: {sorted(names.values())}")
    pre = build_preprocessor(cfg, [ok[k].stats for k in sorted(ok, key=names.get)])
    hist.preprocessor = pre.to_dict()
    hist.nodes = sorted(names.values())
    weights = initial_weights(cfg, len(pre.output_names))
    initial = [np.array(w, copy=True) for w in weights]  # the isolated models of the comparison start here
    by_name = {v: k for k, v in names.items()}
    dropped: set[str] = set()  # nodes that missed a deadline: left out of the rest of the run
    cox = cox_kinds.CoxRoundState(**{k: v for k, v in cox_kinds.cox_settings(cfg).items()
                                     if k in ("penalizer", "stratified")}) if cfg.model == "cox" else None

    def request(reqs: dict[str, NodeRequest], what: str) -> dict:
        replies = transport.request(reqs, budget(what))
        report_missed(sink, replies, what, names)
        for k, v in replies.items():
            if isinstance(v, TimeoutError):  # missed the deadline, or NodeUnreachable
                log.warning("%s: node %s did not answer (%s); leaving it out of the rest of the run",
                            what, names.get(k, k), v)
                dropped.add(names.get(k, k))
        return replies

    def emit(r: int, train: dict, evaluation: dict, seconds: float, w: list) -> None:
        metrics = round_metrics(train, evaluation)
        metrics.append({"node": "global", "name": "round_time_s", "value": seconds})
        hist.rounds.append({"round": r, "metrics": metrics})
        hist.weights = w
        sink.round(r, metrics)
        g = {m["name"]: m["value"] for m in metrics if m["node"] == "global"}
        log.info("round %d: loss %.4f, C-index %.4f (%d nodes, %.2f s)", r, g["loss"], g["c_index"],
                 len(train), seconds)

    def evaluate(r: int, w: list, nodes: list[str]) -> dict:
        replies = request({by_name[n]: NodeRequest("evaluate", w, {"preprocessor": hist.preprocessor,
                                                                   "round": r}) for n in nodes},
                          f"round {r} evaluation")
        ok = successful_replies(replies, f"round {r} evaluation", cfg.min_nodes)
        return {names[k]: v.metrics for k, v in ok.items()}

    has_baseline = hasattr(build_model(cfg.model, len(pre.output_names), cfg.model_params), "set_baseline")

    def baseline(w: list, nodes: list[str], with_evaluation: bool = False) -> dict:
        """Binned Breslow sums of `w` from `nodes`, summed into hist.baseline; with
        `with_evaluation`, each node also evaluates `w` (its metrics by node name)."""
        conf = {"preprocessor": hist.preprocessor, "round": cfg.num_rounds}
        if with_evaluation:
            conf["evaluate"] = True
        replies = request({by_name[n]: NodeRequest("baseline", w, conf) for n in nodes}, "baseline hazard")
        ok = successful_replies(replies, "baseline hazard", cfg.min_nodes)
        times, cumhaz = merge_baseline([ok[k].arrays for k in sorted(ok, key=names.get)])
        hist.baseline = {"times": times.tolist(), "cumhaz": cumhaz.tolist(), "nodes": sorted(names[k] for k in ok)}
        return {names[k]: v.metrics for k, v in ok.items()}

    # preprocessing is done: the run page's history and the benchmarks date the first round from
    # here (with fused evaluation, round 1's record is written only when its evaluation comes back
    # with round 2's training replies)
    sink.event("training", nodes=len(ok))
    pending = None  # fused evaluation: (round, train metrics, weights, start time) awaiting evaluation
    for r in range(1, cfg.num_rounds + 1):
        t0 = time.monotonic()
        available = [names[k] for k in transport.nodes() if k in names and names[k] not in dropped]
        if len(available) < cfg.min_nodes:
            raise FederationError(f"round {r}: {len(available)} of the study's nodes are connected and "
                                  f"responsive ({', '.join(sorted(available)) or 'none'}), fewer than "
                                  f"min_nodes={cfg.min_nodes}")
        # exact Cox: a Newton step needs every node's sums (a subset would be another likelihood)
        chosen = sorted(available) if cox else select_nodes(available, cfg.fraction_train, cfg.min_nodes, cfg.seed, r)
        conf = {"preprocessor": hist.preprocessor, "round": r, **(cox_kinds.request_config(cfg) if cox else {})}
        if cfg.fuse_evaluation and pending is not None:
            conf["evaluate_incoming"] = True
        kind = cox_kinds.KIND if cox else "train"
        replies = request({by_name[n]: NodeRequest(kind, weights, conf) for n in chosen},
                          f"round {r} training")
        ok = successful_replies(replies, f"round {r} training", cfg.min_nodes)
        trained = {names[k]: {m: x for m, x in v.metrics.items() if not m.startswith("eval_")}
                   for k, v in ok.items()}
        if pending is not None:
            pr, ptrain, pweights, pt0 = pending
            emit(pr, ptrain, {names[k]: {m[5:]: x for m, x in v.metrics.items() if m.startswith("eval_")}
                              for k, v in ok.items()}, t0 - pt0, pweights)
            pending = None
        order = sorted(trained)
        if cox:  # one Newton step on the summed aggregates; every node reports the federation's loss
            beta, loss = PROTOCOL.aggregate(cox_kinds.KIND, {n: ok[by_name[n]] for n in order}, (weights[0], cox))
            weights = [beta]
            for n in order:
                trained[n]["loss"] = loss
        else:
            # DP-FedAvg: equal weights bound one node's influence on the average to dp_clip_norm / m
            weights = fedavg([ok[by_name[n]].arrays for n in order],
                             [1.0 if cfg.dp_enabled else trained[n]["n_train"] for n in order])
            if cfg.dp_enabled:
                weights = add_gaussian_noise(
                    weights, gaussian_noise_std(cfg.dp_noise_multiplier, cfg.dp_clip_norm, len(order)),
                    noise_seed(cfg.seed, r))
        if cfg.fuse_evaluation and r < cfg.num_rounds:
            pending = (r, trained, weights, t0)
            continue
        nodes = [n for n in available if n not in dropped]
        if cfg.fuse_evaluation and has_baseline:
            # the final model's evaluation rides on the baseline request (same weights): one
            # exchange with every node fewer at the end of the run
            evaluated = baseline(weights, nodes, with_evaluation=True)
        else:
            evaluated = evaluate(r, weights, nodes)
        emit(r, trained, evaluated, time.monotonic() - t0, weights)

    # Cox-type models need a baseline hazard to give survival curves: one more phase in which
    # each node sends binned Breslow sums of the final model (aggregates), summed here.
    if hist.weights and has_baseline and not hist.baseline:
        baseline(hist.weights, [names[k] for k in transport.nodes() if k in names and names[k] not in dropped])

    if cfg.comparison and hist.rounds:
        nodes = [names[k] for k in transport.nodes() if k in names and names[k] not in dropped]
        conf = {"preprocessor": hist.preprocessor, "round": cfg.num_rounds, "with_final": True,
                "baseline": {"times": hist.baseline["times"], "cumhaz": hist.baseline["cumhaz"]} if hist.baseline else None}
        replies = request({by_name[n]: NodeRequest("reference", initial + list(hist.weights), conf)
                           for n in nodes}, "comparison")
        ok = {names[k]: v.metrics for k, v in replies.items() if isinstance(v, NodeReply)}
        counts = [v.arrays[0] for v in replies.values() if isinstance(v, NodeReply) and v.arrays]
        if counts:
            hist.curves = curves_from_counts(np.sum(counts, axis=0), cfg.use_case)
        for k, err in replies.items():
            if not isinstance(err, NodeReply):
                log.warning("comparison: node %s failed: %s", names.get(k, k), err)
        if ok:
            extra = comparison_metrics(ok)
            hist.rounds[-1]["metrics"].extend(extra)
            sink.round(hist.rounds[-1]["round"], extra, phase="comparison")
            notes = coverage_notes(extra)  # each score's coverage; under 80 % the refusal
            for note in notes:
                log.info("comparison: %s", note)
            sink.event("comparison_coverage", notes=notes)


def wait_for_nodes(cfg: RunConfig, transport: Transport, timeout_s: float) -> list[str]:
    """Keys of the nodes to start with: every participant once all are connected, else (after
    cfg.join_grace_s) at least cfg.min_nodes of them; FederationError past `timeout_s`."""
    now = time.monotonic()
    deadline = now + timeout_s
    grace = now + min(cfg.join_grace_s, timeout_s)
    want = len(cfg.participants)
    while True:
        keys = transport.nodes()
        if want and len(keys) >= want:
            return keys
        if len(keys) >= cfg.min_nodes and (not want or time.monotonic() >= grace):
            return keys
        if time.monotonic() >= deadline:
            raise FederationError(f"only {len(keys)} node(s) connected after {timeout_s:g} s; "
                                  f"the study needs min_nodes={cfg.min_nodes}")
        time.sleep(min(cfg.poll_interval_s * 5, 1.0))


def check_identities(cfg: RunConfig, names: dict[str, str]) -> None:
    """Each participant's node id must answer with the participant's own name (a node that
    reports another hospital's name is refused: FederationError)."""
    expected = {p["node_id"]: p["node"] for p in cfg.participants}
    wrong = [f"node id {k} answered as {n!r}, registered as {expected[k]!r}"
             for k, n in names.items() if k in expected and expected[k] != n]
    if wrong:
        raise FederationError("; ".join(wrong))


def report_missed(sink: EventSink, replies: dict, phase: str, names: dict[str, str]) -> None:
    """One "node_missed" event per node whose reply to `phase` is an error (the portal shows the
    hospital, the phase and the reason on the run's page)."""
    for k, v in replies.items():
        if not isinstance(v, NodeReply):
            sink.event("node_missed", phase=phase, node=str(names.get(k, k)),
                       reason=f"{type(v).__name__}: {v}"[:1000])


def successful_replies(replies: dict, phase: str, min_nodes: int) -> dict[str, NodeReply]:
    ok = {k: v for k, v in replies.items() if isinstance(v, NodeReply)}
    failed = {k: v for k, v in replies.items() if not isinstance(v, NodeReply)}
    for k, err in failed.items():
        log.warning("%s: node %s failed: %s", phase, k, err)
    if len(ok) < min_nodes:
        reasons = "; ".join(f"{k}: {e}" for k, e in failed.items()) or "no node replied"
        raise FederationError(f"{phase}: {len(ok)} node(s) replied, fewer than min_nodes={min_nodes} ({reasons})")
    return ok


def save_model(model_dir: str | Path, cfg: RunConfig, hist: History) -> Path:
    """Write model.npz (weights w0..wk) and model.json (config, Preprocessor, last metrics)."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in model_files(cfg, hist).items():
        (d / name).write_bytes(data)
    return d


def model_files(cfg: RunConfig, hist: History) -> dict[str, bytes]:
    """{"model.npz": weights w0..wk, "model.json": config, Preprocessor, baseline, last metrics}."""
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i}": w for i, w in enumerate(hist.weights)})
    meta = {
        "model": cfg.model, "model_params": cfg.model_params, "use_case": cfg.use_case,
        "endpoint": cfg.endpoint, "time_unit": "months", "num_rounds": cfg.num_rounds,
        "n_features": len(Preprocessor.from_dict(hist.preprocessor).output_names),
        "preprocessor": hist.preprocessor, "nodes": hist.nodes, "baseline": hist.baseline,
        "curves": hist.curves,
        "final_metrics": hist.rounds[-1]["metrics"] if hist.rounds else [],
    }
    return {"model.npz": buf.getvalue(), "model.json": json.dumps(_finite(meta), indent=1).encode()}


def load_model(model_dir: str | Path):
    """(SurvivalModel, Preprocessor, metadata dict) saved by `save_model`."""
    d = Path(model_dir)
    meta = json.loads((d / "model.json").read_text())
    with np.load(d / "model.npz") as z:
        weights = [z[f"w{i}"] for i in range(len(z.files))]
    model = build_model(meta["model"], meta["n_features"], meta["model_params"])
    model.set_weights(weights)
    if meta.get("baseline") and hasattr(model, "set_baseline"):
        model.set_baseline(np.asarray(meta["baseline"]["times"]), np.asarray(meta["baseline"]["cumhaz"]))
    return model, Preprocessor.from_dict(meta["preprocessor"]), meta


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
