"""Reads of analysis runs: who sees which (the survival runs' rules), the live phases, and the
report as tables (pages, CSV downloads) and as plot data (static/js/analysis_live.js)."""
from __future__ import annotations

import csv
import io

from portal.analyses.models import AnalysisReport
from portal.studies.models import Run
from portal.studies.selectors import runs_visible_to

PHASES = (("describe", "Cohort description"), ("km", "Kaplan-Meier and log-rank"), ("cox", "Cox model"))
TABLES = ("describe", "km", "at_risk", "cox")


def analysis_runs_visible_to(user):
    """Analysis runs `user` may see: exactly the runs the run pages show them (studies.view_run,
    node operators scoped to their hospital's studies)."""
    if not user.has_perm("studies.view_run"):
        return Run.objects.none()
    return runs_visible_to(user).filter(kind=Run.Kind.ANALYSIS)


def report_of(run: Run) -> dict | None:
    rep = AnalysisReport.objects.filter(run=run).only("content").first()
    return rep.content if rep else None


def latest_report(user, study) -> tuple[Run, dict] | None:
    """The newest finished analysis run of `study` that `user` may see, with its report."""
    rep = (AnalysisReport.objects.filter(run__in=analysis_runs_visible_to(user).filter(study=study))
           .select_related("run").order_by("-created_at").first())
    return (rep.run, rep.content) if rep else None


def phase_progress(run: Run) -> list[dict]:
    """Per phase (describe, km, cox): {name, label, state (waiting / running / done), round}:
    from the run's stored events, so a reload shows what the websocket showed."""
    seen: dict[str, int] = {}
    order: list[str] = []
    for ev in run.events.filter(type__in=("phase", "round")).order_by("seq"):
        name = str(ev.body.get("phase") or "")
        if ev.type == "round" and name in ("", "round"):
            continue
        base = name.split(":")[0].split(" ")[0]
        if base not in dict(PHASES):
            continue
        if base not in order:
            order.append(base)
        seen[base] = max(seen.get(base, 0), int(ev.body.get("round") or 0))
    finished = run.status == Run.Status.FINISHED
    out = []
    for name, label in PHASES:
        if name in seen:
            state = "done" if (finished or order.index(name) < len(order) - 1) else "running"
        else:
            state = "done" if finished else "waiting"
        out.append({"name": name, "label": label, "state": state, "round": seen.get(name, 0)})
    return out


# --- tables --------------------------------------------------------------------------------

def _scopes(rep: dict):
    d = rep.get("describe") or {}
    if d.get("pooled") is not None or "pooled" in d:
        yield "pooled", "all hospitals", d.get("pooled")
    for name, s in (d.get("by_hospital") or {}).items():
        yield "hospital", name, s
    for name, s in (d.get("by_group") or {}).items():
        yield "group", name, s


def describe_rows(rep: dict) -> list[dict]:
    """One row per (scope, column[, category]): numeric columns with n, missing, mean, SD,
    quartiles and the quantile error bound; categories with their count and share."""
    rows = []
    for scope, name, s in _scopes(rep):
        if s is None:
            rows.append({"scope": scope, "name": name, "column": "", "kind": "suppressed"})
            continue
        for col, st in (s.get("numeric") or {}).items():
            st = st or {}
            rows.append({"scope": scope, "name": name, "column": col, "kind": "numeric", "n": st.get("n"),
                         "missing": st.get("missing"), "mean": st.get("mean"), "sd": st.get("sd"),
                         "q25": st.get("q25"), "median": st.get("median"), "q75": st.get("q75"),
                         "quantile_error": st.get("quantile_error")})
        for col, st in (s.get("categorical") or {}).items():
            st = st or {}
            counts = st.get("counts") or {}
            # shares only when no category of the row is suppressed (else they would mislead)
            total = sum(counts.values()) if all(isinstance(v, int) for v in counts.values()) else 0
            for cat, v in counts.items():
                rows.append({"scope": scope, "name": name, "column": col, "kind": "category", "category": cat,
                             "count": v, "share": (v / total) if total else None,
                             "missing": st.get("missing")})
    return rows


def summary_tables(rep: dict) -> list[dict]:
    """The descriptive statistics as the page shows them: one table per column, a row per scope
    (pooled first, then each hospital, then each group)."""
    by_col: dict[str, dict] = {}
    for r in describe_rows(rep):
        if r["kind"] == "suppressed":
            continue
        t = by_col.setdefault(r["column"], {"column": r["column"], "kind": r["kind"], "rows": []})
        if r["kind"] == "numeric":
            t["rows"].append(r)
        else:
            key = (r["scope"], r["name"])
            row = next((x for x in t["rows"] if (x["scope"], x["name"]) == key), None)
            if row is None:
                row = {"scope": r["scope"], "name": r["name"], "missing": r["missing"], "cells": {}}
                t["rows"].append(row)
            row["cells"][r["category"]] = {"count": r["count"], "share": r["share"]}
    for t in by_col.values():
        if t["kind"] == "category":
            cats = []
            for row in t["rows"]:
                cats += [c for c in row["cells"] if c not in cats]
            t["categories"] = cats
            for row in t["rows"]:
                row["values"] = [row["cells"].get(c, {"count": None, "share": None}) for c in cats]
    return list(by_col.values())


def notes_by_section(rep: dict) -> dict[str, list[str]]:
    """The report's notes where the page shows them: "km" (Kaplan-Meier, log-rank), "cox",
    "describe" (a cell of the description: "<scope>/<column>: ...") and "other" (the run)."""
    hospitals = set(rep.get("hospitals") or [])
    out: dict[str, list[str]] = {"km": [], "cox": [], "describe": [], "other": []}
    for note in rep.get("notes") or []:
        low = str(note).lower()
        head = str(note).split(":", 1)[0]
        scope = head.split("/", 1)[0]
        if low.startswith(("kaplan-meier", "log-rank", "logrank")):
            out["km"].append(note)
        elif low.startswith("cox"):
            out["cox"].append(note)
        elif "/" in head and (scope == "pooled" or scope in hospitals or scope.startswith("group ")):
            out["describe"].append(note)
        else:
            out["other"].append(note)
    return out


def suppressed_scopes(rep: dict) -> list[str]:
    return [f"{scope} {name}" for scope, name, s in _scopes(rep) if s is None]


def km_rows(rep: dict) -> list[dict]:
    """Kaplan-Meier per group and time on the study's grid: survival, its confidence band, the
    number at risk and the events (suppressed cells are empty)."""
    rows = []
    for g, k in ((rep.get("km") or {}).get("groups") or {}).items():
        for i, t in enumerate(k["time"]):
            rows.append({"group": g, "time": t, "survival": k["survival"][i], "lower": k["lower"][i],
                         "upper": k["upper"][i], "at_risk": k["at_risk"][i], "events": k["events"][i]})
    return rows


def at_risk_rows(rep: dict) -> list[dict]:
    """The number-at-risk table under the KM plot: per group and time (every at_risk_every_months)."""
    table = (rep.get("km") or {}).get("at_risk_table") or {}
    return [{"group": g, "time": t, "at_risk": counts[i]}
            for g, counts in (table.get("groups") or {}).items() for i, t in enumerate(table.get("times") or [])]


def km_medians(rep: dict) -> list[dict]:
    return [{"group": g, "median": k.get("median"), "lo": (k.get("median_ci") or [None, None])[0],
             "hi": (k.get("median_ci") or [None, None])[1]}
            for g, k in ((rep.get("km") or {}).get("groups") or {}).items()]


def cox_rows(rep: dict) -> list[dict]:
    c = rep.get("cox") or {}
    return [{"covariate": name, "coef": c["coef"][i], "se": c["se"][i], "hr": c["hr"][i],
             "hr_lower": c["hr_lower"][i], "hr_upper": c["hr_upper"][i], "p": c["p"][i]}
            for i, name in enumerate(c.get("covariates") or [])]


CSV_COLUMNS = {
    "describe": ["scope", "name", "column", "kind", "category", "n", "missing", "mean", "sd", "q25", "median",
                 "q75", "quantile_error", "count", "share"],
    "km": ["group", "time", "survival", "lower", "upper", "at_risk", "events"],
    "at_risk": ["group", "time", "at_risk"],
    "cox": ["covariate", "coef", "se", "hr", "hr_lower", "hr_upper", "p"],
}


def table_csv(rep: dict, table: str) -> str:
    """Table `table` (describe, km, at_risk or cox) of report `rep` as CSV text (empty cell = suppressed
    or not computed). The KM table's time is in the report's time unit (months)."""
    rows = {"describe": describe_rows, "km": km_rows, "at_risk": at_risk_rows, "cox": cox_rows}[table](rep)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS[table], extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS[table]})
    return buf.getvalue()


def coarse_histogram(h: dict, max_bins: int = 40) -> dict:
    """A histogram of the report (fine bins, for the quantiles) regrouped for the eye: trimmed to
    the bins holding patients, adjacent bins summed into at most `max_bins` bars. A suppressed
    bin (null) adds nothing; a bar that holds one is flagged in "partial" (its count is a lower
    bound). Totals of the reported counts are kept."""
    edges, counts = list(h.get("edges") or []), list(h.get("counts") or [])
    if len(edges) != len(counts) + 1 or not counts:
        return {"edges": edges, "counts": counts, "partial": [False] * len(counts)}
    filled = [i for i, c in enumerate(counts) if c is None or c > 0]
    if not filled:
        return {"edges": edges[:2], "counts": [0], "partial": [False]}
    lo, hi = filled[0], filled[-1] + 1
    n = hi - lo
    step = max(1, -(-n // max_bins))
    out_edges, out_counts, partial = [edges[lo]], [], []
    for start in range(lo, hi, step):
        stop = min(start + step, hi)
        chunk = counts[start:stop]
        out_counts.append(sum(c for c in chunk if c is not None))
        partial.append(any(c is None for c in chunk))
        out_edges.append(edges[stop])
    return {"edges": out_edges, "counts": out_counts, "partial": partial}


def plot_data(rep: dict) -> dict:
    """What the page's plots draw (JSON-ready): KM curves with bands and the at-risk table,
    the Cox forest plot, histograms from the binned counts and category bars (pooled)."""
    km = rep.get("km") or {}
    pooled = (rep.get("describe") or {}).get("pooled") or {}
    hists = {c: coarse_histogram(st["histogram"]) for c, st in (pooled.get("numeric") or {}).items()
             if st and st.get("histogram") and st["histogram"].get("edges")}
    cats = {c: st["counts"] for c, st in (pooled.get("categorical") or {}).items() if st and st.get("counts")}
    return {"time_unit": rep.get("time_unit", "months"), "endpoint": rep.get("endpoint", ""),
            "km": km.get("groups") or {}, "at_risk": km.get("at_risk_table") or {"times": [], "groups": {}},
            "cox": rep.get("cox"), "histograms": hists, "categories": cats}
