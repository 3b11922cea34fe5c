"""The manager's driver of an analysis run over a Transport (Flower's Grid in deployment, direct
calls in process): describe -> Kaplan-Meier / log-rank -> Cox (Newton rounds until converged),
then analysis.json (layout: fl_engine.federation.analysis.report) in cfg.model_dir and the
"finished" event carrying it. Each phase emits a "phase" event (describe, km, cox with its round).
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from fedhaem_kernel.schema import get_schema
from fl_engine.analytics import km
from fl_engine.analytics.cox import CoxInputError, CoxNewton, EfronSums, add_efron, efron_terms, penalise
from fl_engine.analytics.describe import MISSING_GROUP, describe_spec, split_scopes, summarise
from fl_engine.analytics.design import design_terms, unscale
from fl_engine.analytics.settings import HOSPITAL
from fl_engine.federation.analysis.kinds import COX, DESCRIBE, KM, km_scopes, request_config
from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import FederationError, NodeReply, NodeRequest
from fl_engine.federation.events import EventSink
from fl_engine.federation.loop import (
    Transport, check_identities, report_missed, successful_replies, time_budget, wait_for_nodes,
)

log = logging.getLogger("fedhaem.federation")

MAX_NEWTON = 25
ANALYSIS_FILE = "analysis.json"


def run_analysis(cfg: RunConfig, transport: Transport, sink: EventSink | None = None) -> dict:
    """Run the analysis study; returns the analysis.json document (also written to
    cfg.model_dir when set). Raises FederationError when too few hospitals answer."""
    sink = sink or EventSink.from_config(cfg)
    t_end = time.monotonic() + cfg.run_timeout_s
    sink.event("started")
    try:
        if cfg.task != "analysis" or not cfg.analysis:
            raise FederationError("run_analysis needs task 'analysis' and validated analysis settings")
        doc = _run(cfg, transport, sink, t_end)
        data = json.dumps(doc, allow_nan=False, indent=1).encode()
    except Exception as err:
        sink.event("failed", reason=str(err))
        raise
    if cfg.model_dir:
        Path(cfg.model_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.model_dir) / ANALYSIS_FILE).write_bytes(data)
    sink.finished({ANALYSIS_FILE: data}, hospitals=len(doc["hospitals"]))
    return doc


def _clean(obj):
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _run(cfg: RunConfig, transport: Transport, sink: EventSink, t_end: float) -> dict:
    settings = cfg.analysis
    budget = time_budget(cfg, t_end)
    k = int(cfg.min_cell_count)
    notes: list[str] = []
    ids = {p["node_id"]: p["node"] for p in cfg.participants}

    keys = wait_for_nodes(cfg, transport, budget("waiting for nodes"))
    live = list(keys)
    names: dict[str, str] = {}

    def phase(kind: str, what: str, round_: int = 0, arrays=None) -> dict[str, NodeReply]:
        reqs = {key: NodeRequest(kind, list(arrays or []), request_config(cfg, round_)) for key in live}
        answered = transport.request(reqs, budget(what))
        report_missed(sink, answered, what, {**ids, **names})
        ok = successful_replies(answered, what, cfg.min_nodes)
        for key, err in answered.items():
            if not isinstance(err, NodeReply):
                notes.append(f"{what}: hospital {names.get(key, ids.get(key, key))} did not answer ({err})"[:500])
        live[:] = [key for key in live if key in ok]
        return {key: ok[key] for key in live}

    # 1. describe (always: it names the hospitals)
    sink.event("describe", round=0)
    replies = phase(DESCRIBE, "describe")
    for key, r in replies.items():
        names[key] = r.name
    check_identities(cfg, names)  # a node answering under another hospital's name is refused
    if len(set(names.values())) != len(names):
        raise FederationError(f"two nodes report the same name: {sorted(names.values())}")
    live.sort(key=names.get)
    hospitals = [names[key] for key in live]
    doc = {"version": 1, "use_case": cfg.use_case, "endpoint": cfg.endpoint, "time_unit": "months",
           "min_cell_count": k, "hospitals": hospitals, "settings": settings,
           "describe": None, "km": None, "logrank": None, "logrank_stratified": None, "cox": None, "notes": notes}
    if "describe" in settings["analyses"]:
        doc["describe"] = describe_result(cfg, {names[key]: r.arrays for key, r in replies.items()}, notes)

    # 2. Kaplan-Meier and log-rank; 3. Cox. A phase that cannot be computed (too few hospitals
    # answering, no events, a singular information matrix) leaves its block null with a note;
    # the other analyses stand.
    if {"km", "logrank"} & set(settings["analyses"]):
        sink.event("km", round=0)
        try:
            replies = phase(KM, "km")
            out = km_result(cfg, {names[key]: r for key, r in replies.items()}, notes)
        except FederationError as err:
            notes.append(f"Kaplan-Meier and log-rank not computed: {err}"[:1000])
        else:
            if "km" in settings["analyses"]:
                doc["km"] = out["km"]
            if "logrank" in settings["analyses"]:
                doc["logrank"], doc["logrank_stratified"] = out["logrank"], out["logrank_stratified"]
    if "cox" in settings["analyses"]:
        try:
            doc["cox"] = _cox_phase(cfg, sink, phase, names, notes)
        except (FederationError, CoxInputError) as err:
            notes.append(f"Cox model not fitted: {err}"[:1000])
    if doc["describe"] is None and doc["km"] is None and doc["logrank"] is None and doc["cox"] is None:
        raise FederationError("no analysis could be computed: " + "; ".join(notes[-3:]))
    return _clean(doc)


def _cox_phase(cfg: RunConfig, sink: EventSink, phase, names: dict[str, str], notes: list[str]) -> dict:
    """Newton-Raphson rounds of analysis_cox requests until the step is below 1e-10 (at most
    MAX_NEWTON); the "cox" block."""
    settings = cfg.analysis
    terms = design_terms(get_schema(cfg.use_case), settings["covariates"])
    beta = np.zeros(len(terms))
    newton = CoxNewton(tol=1e-10)
    fixed: tuple[str, ...] | None = None
    it = 0
    for it in range(1, MAX_NEWTON + 1):
        sink.event("cox", round=it)
        replies = phase(COX, "cox", it, [beta])
        by_name = {names[key]: r for key, r in replies.items()}
        if fixed is None:
            fixed = tuple(sorted(by_name))
        elif tuple(sorted(by_name)) != fixed:
            raise FederationError(f"hospitals changed during the Newton rounds ({list(fixed)} -> {sorted(by_name)})")
        ll, g, h, n_total, n_events, moved = cox_terms(by_name, beta, settings["cox_stratified"])
        ll, g, h = penalise(ll, g, h, beta, settings["cox_penalizer"], n_total)
        nxt = newton.step(beta, ll, g, h)
        if newton.converged or it == MAX_NEWTON:
            break
        beta = nxt
    if moved:
        notes.append(f"Cox: {moved} patients' times were coarsened (grid steps merged at a hospital so that "
                     f"no count below {cfg.min_cell_count} left it)")
    out = cox_result(terms, beta, h, ll, it, n_total, n_events, settings["cox_stratified"])
    if not newton.converged:
        notes.append(f"Cox: Newton-Raphson did not converge within {MAX_NEWTON} rounds; the figures are the "
                     f"last iterate's")
        out["converged"] = False
    return out


# --- the pieces (pure: also the oracles' subject in the tests and the bench) --------------------

def describe_result(cfg: RunConfig, arrays_by_name: dict[str, list[np.ndarray]], notes: list[str]) -> dict:
    """The "describe" block from each hospital's describe arrays."""
    settings = cfg.analysis
    spec = describe_spec(get_schema(cfg.use_case), settings)
    parts = {name: split_scopes(a, spec) for name, a in sorted(arrays_by_name.items())}
    out = {"pooled": summarise([p["all"] for p in parts.values()], spec, "pooled", notes),
           "by_hospital": {name: summarise([p["all"]], spec, name, notes) for name, p in parts.items()},
           "by_group": {}}
    if settings["group_by"] == HOSPITAL:
        out["by_group"] = dict(out["by_hospital"])
    else:
        for g in spec.groups:
            s = summarise([p[g] for p in parts.values()], spec, f"group {g}", notes)
            if s["n"]:
                out["by_group"][g] = s
    return out


def km_result(cfg: RunConfig, replies: dict[str, NodeReply], notes: list[str]) -> dict:
    """{"km", "logrank", "logrank_stratified"} from each hospital's KM reply (by name)."""
    settings = cfg.analysis
    h = float(settings["time_step_months"])
    scopes = km_scopes(get_schema(cfg.use_case), settings)
    per: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, r in sorted(replies.items()):
        flags = np.asarray(r.arrays[-1])
        per[name] = {}
        for i, scope in enumerate(scopes):
            if flags[i]:
                notes.append(f"Kaplan-Meier: group {scope} at hospital {name} cannot be reported under the "
                             f"small-cell rule (fewer than {cfg.min_cell_count} patients, or between 1 and "
                             f"{cfg.min_cell_count - 1} events or censored patients in all) and is left out of "
                             f"that group's curve")
                continue
            per[name][scope] = (np.asarray(r.arrays[2 * i], float), np.asarray(r.arrays[2 * i + 1], float))
        if r.metrics.get("moved"):
            notes.append(f"Kaplan-Meier: hospital {name} coarsened {int(r.metrics['moved'])} of its patients' "
                         f"times (merged grid steps so that no count below {cfg.min_cell_count} left it; its "
                         f"group curves are merged apart, alike)")
    if settings["group_by"] == HOSPITAL:
        groups = {name: {name: p["all"]} for name, p in per.items()}
    elif len(scopes) > 1:
        groups = {g: {name: p[g] for name, p in per.items() if g in p} for g in scopes[1:]}
    else:
        groups = {"all": {name: p["all"] for name, p in per.items()}}
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for g, parts in groups.items():
        ev = km.pad_add([a for a, _ in parts.values()])
        ce = km.pad_add([b for _, b in parts.values()])
        if ev.sum() + ce.sum() > 0:
            pooled[g] = (ev, ce)
    curves = {g: km.km_curve(ev, ce, h) for g, (ev, ce) in pooled.items()}
    horizon = max((max(c["time"]) for c in curves.values()), default=0.0)
    times: list[float] = []
    table: dict[str, list] = {}
    for g, (ev, ce) in pooled.items():
        times, table[g] = km.at_risk_table(ev, ce, h, float(settings["at_risk_every_months"]), horizon)
    out = {"km": {"groups": curves, "at_risk_table": {"times": times, "groups": table}},
           "logrank": None, "logrank_stratified": None}
    names = [g for g in pooled if g != MISSING_GROUP]  # the test compares recorded groups only
    if len(names) < len(pooled):
        notes.append(f"log-rank: patients whose {settings['group_by']} is not recorded have their own curve "
                     f"({MISSING_GROUP}) but are not part of the tests")
    if len(names) >= 2:
        z, v = km.logrank_terms([pooled[g][0] for g in names], [pooled[g][1] for g in names])
        out["logrank"] = {**km.chi2_test(z, v), "groups": names}
        if settings["group_by"] != HOSPITAL:
            zs, vs = np.zeros(len(names)), np.zeros((len(names), len(names)))
            for name, p in per.items():
                evs = [p[g][0] if g in p else np.zeros(0) for g in names]
                ces = [p[g][1] if g in p else np.zeros(0) for g in names]
                z1, v1 = km.logrank_terms(evs, ces)
                zs += z1
                vs += v1
            out["logrank_stratified"] = km.chi2_test(zs, vs)
    elif settings["group_by"]:
        notes.append("log-rank: fewer than two groups with patients; no test")
    return out


def cox_terms(replies: dict[str, NodeReply], beta: np.ndarray, stratified: bool):
    """(log likelihood, gradient, Hessian, patients, events, moved) of the Efron partial
    likelihood at `beta`: summed sums (pooled) or summed per-hospital terms (stratified)."""
    parts = [EfronSums.from_arrays(r.arrays, r.metrics["n"], r.metrics["moved"]) for _, r in sorted(replies.items())]
    n_total = int(sum(r.metrics["n"] for r in replies.values()))
    n_events = int(sum(r.metrics["events"] for r in replies.values()))
    moved = int(sum(r.metrics["moved"] for r in replies.values()))
    if n_events == 0:
        raise FederationError("cox: no events among the complete cases; a Cox model cannot be fitted")
    try:
        if stratified:
            terms = [efron_terms(s, beta) for s in parts]
            ll = float(sum(t[0] for t in terms))
            g = np.sum([t[1] for t in terms], axis=0)
            h = np.sum([t[2] for t in terms], axis=0)
        else:
            ll, g, h = efron_terms(add_efron(parts), beta)
    except CoxInputError as err:
        raise FederationError(f"cox: {err}") from err
    return ll, g, h, n_total, n_events, moved


def cox_result(terms, beta, hess, ll, iterations, n, events, stratified) -> dict:
    try:
        cov = np.linalg.inv(-hess)
    except np.linalg.LinAlgError:
        raise FederationError("cox: the information matrix is singular (collinear covariates or too few "
                              "events); drop a covariate or raise cox_penalizer") from None
    coef, cov = unscale(terms, np.asarray(beta, float), cov)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    z = np.where(se > 0, coef / np.where(se > 0, se, 1.0), np.nan)
    p = np.array([math.erfc(abs(v) / math.sqrt(2)) if math.isfinite(v) else math.nan for v in z])
    zq = km.Z95
    return {"covariates": [t.name for t in terms], "coef": coef.tolist(), "se": se.tolist(),
            "hr": np.exp(coef).tolist(), "hr_lower": np.exp(coef - zq * se).tolist(),
            "hr_upper": np.exp(coef + zq * se).tolist(), "p": p.tolist(), "stratified": bool(stratified),
            "n": int(n), "events": int(events), "iterations": int(iterations), "loglik": float(ll)}
