"""The manager's phase driver of a synthesis run, written once over a Transport (Flower's Grid in
deployment, direct calls in process) for every generator.

Summaries first (the global summary; the nodes' sizes); then each round the run's generator's
steps (`generative.FederatedGenerator.steps`), each one phase of synth_<step> requests whose
replies the protocol folds into the generator; then a cohort sampled from the global generator,
validated by every node (synth_validate) and pooled: CSF / GSF / NNDR p5 go to `sink.round`
(global and per node, plus each node's alone_* scores and, for sd_sharing, its gate).
"""
from __future__ import annotations

import logging
import time

import pandas as pd

from fl_engine.federation.config import RunConfig, parse_run_config
from fl_engine.federation.core import FederationError, NodeReply, NodeRequest
from fl_engine.federation.events import EventSink
from fl_engine.federation.executor import LocalTransport
from fl_engine.federation.loop import Transport, report_missed, successful_replies, time_budget, wait_for_nodes
from fl_engine.federation.protocol import PROTOCOL
from fl_engine.federation.synthesis.aggregate import SynthesisRun
from fl_engine.federation.synthesis.codec import frame_to_payload, make_request
from fl_engine.federation.synthesis.report import round_metrics_synth, save_synthesis, synthesis_files
from fl_engine.federation.synthesis.settings import SYNTH_GENERATORS, federation, run_seed, synthesis_spec
from generative import GateThresholds, SafeConfig, evaluate_gate, fit_tstr_model

log = logging.getLogger("fedhaem.federation")


def run_synthesis(cfg: RunConfig, transport: Transport, sink: EventSink | None = None) -> dict:
    """Federated generation: summaries, rounds of training + validation, final cohort and report.
    Returns {"synthetic": DataFrame, "report", "gate", "rounds": [...]}; raises FederationError."""
    sink = sink or EventSink.from_config(cfg)
    t_end = time.monotonic() + cfg.run_timeout_s
    sink.event("started")
    try:
        out = _run(cfg, transport, sink, t_end)
        files = synthesis_files(cfg, out)
    except Exception as err:
        sink.event("failed", reason=str(err))
        raise
    if cfg.model_dir:
        save_synthesis(cfg.model_dir, cfg, out)
    sink.finished(files, rounds=len(out["rounds"]))
    return out


def _run(cfg: RunConfig, transport: Transport, sink: EventSink, t_end: float) -> dict:
    if cfg.generator not in SYNTH_GENERATORS:
        raise FederationError(f"generator {cfg.generator!r} is not one of {', '.join(SYNTH_GENERATORS)}")
    run = SynthesisRun(cfg, synthesis_spec(cfg))
    budget = time_budget(cfg, t_end)

    keys = wait_for_nodes(cfg, transport, budget("waiting for nodes"))
    first = transport.request({k: NodeRequest("synth_summary", [], {"round": 0}) for k in keys}, budget("summaries"))
    report_missed(sink, first, "summaries", {p["node_id"]: p["node"] for p in cfg.participants})
    ok = successful_replies(first, "summaries", cfg.min_nodes)
    names = {k: r.name for k, r in ok.items()}
    if len(set(names.values())) != len(names):
        raise FederationError(f"two nodes report the same name: {sorted(names.values())}")
    live = sorted(ok, key=names.get)  # node keys still in the run, in name order

    def phase(kind: str, payload: dict, r: int, what: str, per_node: dict | None = None) -> dict[str, NodeReply]:
        reqs = {k: make_request(kind, {**payload, **(per_node or {}).get(names[k], {})}, {"round": r}) for k in live}
        answered = transport.request(reqs, budget(what))
        report_missed(sink, answered, what, names)
        replies = successful_replies(answered, what, cfg.min_nodes)
        live[:] = [k for k in live if k in replies]
        return {names[k]: replies[k] for k in live}

    def fold(kind: str, replies: dict[str, NodeReply]):
        try:
            return PROTOCOL.aggregate(kind, replies, run)
        except ValueError as err:  # replies the manager cannot aggregate end the run
            raise FederationError(str(err)) from err

    summary = fold("synth_summary", {names[k]: ok[k] for k in live})
    n_train = {names[k]: int(ok[k].metrics["n_train"]) for k in live}
    n_val = sum(n_train.values())
    n_final = cfg.synth_rows or n_val
    run.fed = fed = federation(cfg, run.spec, summary)
    fed.start()
    n_rounds = fed.rounds(cfg.num_rounds)
    rounds: list[dict] = []
    report = synthetic = None
    for r in range(1, n_rounds + 1):
        t0 = time.monotonic()
        node_metrics: dict[str, dict] = {}  # the scalars of every node's replies this round
        for step in fed.steps():
            message, per_node = step.request(n_train, n_final)
            replies = phase(f"synth_{step.name}", message, r, f"round {r} {step.label}" if fed.iterative
                            else step.label, per_node)
            fold(f"synth_{step.name}", replies)
            for n, rep in replies.items():
                node_metrics.setdefault(n, {}).update(rep.metrics)
        n_final = fed.sample_size(n_final)
        last = r == n_rounds
        run.synthetic = syn = fed.generator().sample(n_final if last else n_val, seed=run_seed(cfg, "sample", r))
        payload = {"synthetic": frame_to_payload(syn),
                   "parts": ["fidelity", "utility", "privacy"] if last else ["fidelity", "privacy"]}
        if last:
            payload["tstr_model"] = fit_tstr_model(syn, run.spec, SafeConfig(seed=cfg.seed))
        pooled, reps = fold("synth_validate", phase("synth_validate", payload, r, f"round {r} validation"))
        metrics = round_metrics_synth(pooled, reps, node_metrics)
        metrics.append({"node": "global", "name": "round_time_s", "value": time.monotonic() - t0})
        rounds.append({"round": r, "metrics": metrics})
        sink.round(r, metrics)
        log.info("synthesis round %d: CSF %.3f, GSF %.3f, NNDR p5 %.3f", r, pooled.get("csf", float("nan")),
                 pooled.get("gsf", float("nan")), pooled.get("nndr_p5", float("nan")))
        report, synthetic = pooled, syn
    gate = evaluate_gate(report, GateThresholds())
    return {"synthetic": synthetic, "report": report, "gate": gate, "rounds": rounds,
            "nodes": sorted(n_train), "n_train": n_train, "spec": run.spec.as_dict()}


def run_synthesis_in_process(config: dict | RunConfig, node_tables: dict[str, pd.DataFrame],
                             transport_out: list | None = None) -> dict:
    """Federated generation over {node name: ML-ready table} in this process (the same loop and
    node handlers as the Flower apps; replies pass the same privacy check). `transport_out`,
    when given, receives the LocalTransport, which then keeps every reply it accepted
    (`replies`: (kind, reply) pairs, for tests)."""
    cfg = config if isinstance(config, RunConfig) else parse_run_config({"task": "synthesis", **config})
    if not node_tables:
        raise ValueError("run_synthesis_in_process: no node tables")
    t = LocalTransport(cfg, node_tables, keep_replies=transport_out is not None)
    if transport_out is not None:
        transport_out.append(t)
    return run_synthesis(cfg, t, EventSink.from_config(cfg))
