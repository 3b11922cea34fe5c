"""Reads on synthetic cohorts: who sees which, and the data card shown with each."""
from __future__ import annotations

from portal.synthesis.models import SyntheticCohort


def cohorts_visible_to(user):
    qs = SyntheticCohort.objects.select_related("run", "run__study")
    if not user.has_perm("synthesis.view_syntheticcohort"):
        return qs.none()
    return qs


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return "—"
    return str(value)


def _flatten(prefix: str, value, out: list[tuple[str, str]]) -> None:
    """Nested report values as label/value pairs in words: never a raw dict or list."""
    label = prefix.replace("_", " ")
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix} · {k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        for check in value:  # the gate's checks: {name, measured, threshold, comparison, passed}
            text = f"measured {_fmt(check.get('measured'))}"
            if "threshold" in check:
                text += f", threshold {_fmt(check.get('threshold'))} ({check.get('comparison', '')})"
            if "passed" in check:
                text += " — passed" if check["passed"] else " — FAILED"
            out.append((f"{label} · {str(check['name']).replace('_', ' ')}", text))
    elif isinstance(value, list):
        out.append((label, ", ".join(_fmt(v) for v in value[:20]) if value else "none"))
    else:
        out.append((label, _fmt(value)))


def data_card(cohort: SyntheticCohort) -> list[tuple[str, str]]:
    """Label/value pairs describing the cohort in plain words (facts first, then the stored card)."""
    rows = [("Generator", cohort.get_generator_display()),
            ("Rows", f"{cohort.row_count} synthetic patients"),
            ("Source study", cohort.run.study.title),
            ("Source run", f"run {cohort.run_id}")]
    extra: list[tuple[str, str]] = []
    for key, value in (cohort.data_card or {}).items():
        _flatten(str(key), value, extra)
    return rows + [(k[:1].upper() + k[1:], v) for k, v in extra]


def report_rows(cohort: SyntheticCohort) -> list[tuple[str, str]]:
    """The SAFE validation report flattened to label/value pairs (numbers rounded, no JSON)."""
    out: list[tuple[str, str]] = []
    _flatten("", cohort.validation_report or {}, out)
    return out


# --- generation runs ---------------------------------------------------------------------------

SCORES = (("csf", "CSF (clinical synthetic fidelity)"), ("gsf", "GSF (genomic synthetic fidelity)"),
          ("nndr_p5", "NNDR, 5th percentile"))


def generation_chart_data(run) -> dict:
    """What the live generation page draws, JSON-ready: per score, the federated generator's
    pooled value per round ("federated") and each node's generator trained alone ("alone:<node>")."""
    scores: dict[str, dict[str, dict[str, list]]] = {k: {} for k, _ in SCORES}
    done = 0
    for m in run.metrics.all().order_by("round"):
        if m.node == "global" and m.name in scores:
            line = "federated"
            done = max(done, m.round)
        elif m.name.startswith("alone_") and m.name[6:] in scores:
            line = f"alone:{m.node}"
        else:
            continue
        name = m.name[6:] if m.name.startswith("alone_") else m.name
        s = scores[name].setdefault(line, {"x": [], "y": []})
        s["x"].append(m.round)
        s["y"].append(round(m.value, 4))
    return {"run": run.pk, "rounds": run.rounds, "done": done, "scores": scores,
            "labels": dict(SCORES), "status": run.status}


def last_round_table(run) -> list[dict]:
    """Last round per node: federated CSF/GSF/NNDR p5 on that node's patients and the node-alone
    scores; the federation's pooled row first."""
    last: dict[tuple[str, str], tuple[int, float]] = {}
    for m in run.metrics.all():
        key = (m.node, m.name)
        if key not in last or m.round > last[key][0]:
            last[key] = (m.round, m.value)
    nodes = sorted({n for n, _ in last if n != "global"})
    rows = [{"node": "Federation (pooled)", **{k: last.get(("global", k), (0, None))[1] for k, _ in SCORES}}]
    for n in nodes:
        rows.append({"node": n, **{k: last.get((n, k), (0, None))[1] for k, _ in SCORES},
                     **{f"alone_{k}": last.get((n, f"alone_{k}"), (0, None))[1] for k, _ in SCORES}})
    return rows


def report_plots(cohort: SyntheticCohort) -> dict:
    """Plot data of a validation report: Kaplan-Meier real vs synthetic (months), the per-column
    fidelity tests (1 - KS / 1 - TV) and the gate checks; empty parts when the report lacks them."""
    rep = cohort.validation_report or {}
    out: dict = {}
    surv = rep.get("survival") or {}
    if surv.get("time_months") and surv.get("km_real") and surv.get("km_synthetic"):
        n = min(len(surv["time_months"]), len(surv["km_real"]), len(surv["km_synthetic"]))
        out["km"] = {"t": surv["time_months"][:n], "real": surv["km_real"][:n], "synthetic": surv["km_synthetic"][:n]}
    tests = rep.get("tests") or {}
    cols = [(k.split(":", 1)[1], 1 - float(v)) for k, v in tests.items()
            if isinstance(v, (int, float)) and (k.startswith("ks:") or k.startswith("tv:"))]
    if cols:
        out["columns"] = {"names": [c for c, _ in cols], "scores": [round(v, 4) for _, v in cols]}
    gate = rep.get("gate") or {}
    out["gate"] = [{"name": c.get("name"), "measured": c.get("measured"), "threshold": c.get("threshold"),
                    "comparison": c.get("comparison"), "passed": c.get("passed")} for c in gate.get("checks", [])]
    return out
