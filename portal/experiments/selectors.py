"""Reads on experiment grids: who sees which, how each is described, and what the comparison
page's grid section shows (tables and chart data of the latest finished grid)."""
from __future__ import annotations

from fl_engine.scores.conventional import LABELS
from portal.experiments.models import GridRun
from portal.experiments.services import can_cancel_grid, can_start_grid
from portal.studies.selectors import studies_visible_to
from portal.synthesis.models import SyntheticCohort

VIEW_PERM = "studies.view_run"  # whoever may view the study's runs


def grids_visible_to(user):
    qs = GridRun.objects.select_related("study", "created_by", "synthetic_cohort", "synthetic_cohort__run")
    if not user.has_perm(VIEW_PERM):
        return qs.none()
    return qs.filter(study__in=studies_visible_to(user).values("pk"))


def released_cohorts(study):
    """Released synthetic cohorts of `study`: the only non-generated source a grid may pool."""
    return SyntheticCohort.objects.filter(run__study=study, released=True).select_related("run")


def cohort_label(cohort) -> str:
    released = cohort.released_at.strftime("%Y-%m-%d %H:%M UTC") if cohort.released_at else "date not recorded"
    return (f"synthetic cohort #{cohort.pk} from generation run #{cohort.run_id}, generator "
            f"{cohort.get_generator_display()}, {cohort.row_count} rows, released {released}")


def source_label(grid: GridRun) -> str:
    """Which pooled data a grid used, in words."""
    if grid.source == GridRun.Source.GENERATED:
        return f"generated MDS cohort n={grid.generated_n}, seed {grid.generated_seed}"
    if grid.synthetic_cohort is None:
        return "synthetic cohort (no longer stored)"
    return cohort_label(grid.synthetic_cohort)


def settings_label(grid: GridRun) -> str:
    c = grid.config or {}
    model = {"deepsurv": "DeepSurv", "savae": "SAVAE", "cox": "Cox"}.get(c.get("model"), c.get("model", "?"))
    return (f"{model}, {c.get('seeds', '?')} seed(s), up to {c.get('rounds', '?')} rounds, "
            f"federations of {' and '.join(map(str, c.get('federations', [])))} nodes, "
            f"{' and '.join(c.get('cases', []))} case, "
            f"{'with' if c.get('isolated') else 'without'} isolated nodes, {c.get('n_boot', '?')} bootstrap samples")


def last_line(grid: GridRun) -> str:
    """The grid's latest progress line (what it is doing)."""
    lines = (grid.progress or "").strip().splitlines()
    return lines[-1] if lines else ""


# --- the latest finished grid: tables and charts -------------------------------------------

def _score_labels() -> dict[str, str]:
    return {**LABELS, "ipss_m_published": "IPSS-M (published)", "ipss_r_published": "IPSS-R (published)"}


SCORE_LABELS = _score_labels()  # every use case's conventional scores, as the grid names them
CASE_LABELS = {"best": "Best case (every node has every feature group)",
               "worst": "Worst case (nodes lack feature groups, extra missing values)"}


def setting_label(setting: str, short: bool = False) -> str:
    """A grid setting in words (short: for chart axes)."""
    if setting.startswith("cox_"):  # the penalised Cox baseline beside the grid's model
        rest = setting_label(setting[4:], short)
        return f"Cox baseline, {rest[0].lower()}{rest[1:]}"
    if setting == "centralised":
        return "Centralised" if short else "Centralised (all training patients pooled)"
    if setting.startswith("federated_"):
        return f"Federated, {setting.split('_')[1]} nodes"
    if setting in SCORE_LABELS:
        return SCORE_LABELS[setting]
    base, _, k = setting.rpartition("_")
    if base in SCORE_LABELS and k.isdigit():
        if short:
            return f"{SCORE_LABELS[base]}, worst case ({k} nodes)"
        return f"{SCORE_LABELS[base]} (worst-case test rows of the {k}-node federation)"
    return setting.replace("_", " ")


def _setting_order(setting: str) -> tuple:
    if setting.startswith("cox_"):  # right after the setting it is the baseline of
        base = _setting_order(setting[4:])
        return (base[0], base[1], "~" + setting)
    if setting == "centralised":
        return (0, 0, setting)
    if setting.startswith("federated_"):
        return (1, int(setting.split("_")[1]), setting)
    base, _, k = setting.rpartition("_")
    if k.isdigit():
        return (3, int(k), setting)
    return (2, 0, setting)


def _cell(row: dict | None) -> dict | None:
    if row is None or row.get("harrell_c") is None:
        return None
    return {"c": row["harrell_c"], "lo": row.get("lo"), "hi": row.get("hi"), "seeds": row.get("seeds"),
            "n": row.get("n"), "sd": row.get("sd"), "rounds": row.get("rounds_used"),
            "ibs": row.get("ibs"), "ibs_km": row.get("ibs_km"), "coverage": row.get("coverage"),
            "coverage_min": row.get("coverage_min"),
            "low_coverage": row.get("coverage_ok") is not None and not row.get("coverage_ok")}


def global_table(grid: GridRun) -> dict:
    """Global test set, setting x case: Harrell C, mean bootstrap interval, seeds."""
    summary = (grid.results or {}).get("summary") or []
    cases = list((grid.config or {}).get("cases") or ["best", "worst"])
    at = {(r["setting"], r["case"]): r for r in summary
          if r["eval"] == "global" and not r["setting"].startswith("isolated")}
    settings = sorted({s for s, _ in at}, key=_setting_order)
    rows = [{"setting": s, "label": setting_label(s), "cells": [_cell(at.get((s, c))) for c in cases]}
            for s in settings]
    return {"cases": [{"key": c, "label": CASE_LABELS.get(c, c)} for c in cases], "rows": rows}


def node_tables(grid: GridRun) -> list[dict]:
    """Per federation and case, per node: federated vs isolated on the node's own test rows, the
    isolated model on the global test set (the federated model's global C above them), the Cox
    baseline and the conventional scores on the node's test rows (with their coverage)."""
    summary = (grid.results or {}).get("summary") or []
    cfg = grid.config or {}
    idx = {(r["setting"], r["case"], r["eval"], r["trained_on"]): r for r in summary}
    out = []
    for k in cfg.get("federations", []):
        fed = f"federated_{k}"
        for case in cfg.get("cases", []):
            rows = []
            for i in range(1, int(k) + 1):
                node = f"node{i}"
                f_node = _cell(idx.get((fed, case, node, fed)))
                i_node = _cell(idx.get((f"isolated_{k}", case, node, node)))
                i_glob = _cell(idx.get((f"isolated_{k}", case, "global", node)))
                gain = f_node["c"] - i_node["c"] if f_node and i_node else None
                cox = _cell(idx.get((f"cox_{fed}", case, node, f"cox_{fed}")))
                scores = [{"label": SCORE_LABELS.get(r["setting"][:-len(f"_{k}")], r["setting"]), "cell": _cell(r)}
                          for r in summary if r["case"] == case and r["eval"] == node
                          and r["setting"].endswith(f"_{k}") and r["setting"][:-len(f"_{k}")] in SCORE_LABELS]
                rows.append({"node": node, "n": (f_node or i_node or {}).get("n"), "federated": f_node,
                             "isolated": i_node, "gain": gain, "isolated_global": i_glob, "cox": cox,
                             "scores": scores})
            out.append({"k": k, "case": case, "case_label": CASE_LABELS.get(case, case),
                        "federated_global": _cell(idx.get((fed, case, "global", fed))), "rows": rows})
    return out


def chart_data(grid: GridRun) -> dict:
    """What static/js/grid.js draws: bars (global C per setting and case with intervals), C per
    round of the largest federation, best case (federated vs isolated per node), KM panels."""
    table = global_table(grid)
    bars = {"labels": [setting_label(r["setting"], short=True) for r in table["rows"]], "series": []}
    for j, case in enumerate(table["cases"]):
        cells = [r["cells"][j] for r in table["rows"]]
        bars["series"].append({"name": case["key"] + " case", "y": [c["c"] if c else None for c in cells],
                               "lo": [c["lo"] if c else None for c in cells],
                               "hi": [c["hi"] if c else None for c in cells]})
    cfg = grid.config or {}
    rounds = (grid.results or {}).get("rounds") or []
    feds = [int(k) for k in cfg.get("federations", [])]
    series = []
    k = max(feds) if feds else None
    case = "best" if "best" in cfg.get("cases", []) else (cfg.get("cases") or [None])[0]
    if k:
        lines: dict[tuple[str, str], dict] = {}
        for r in rounds:
            if r["case"] != case or r["setting"] not in (f"federated_{k}", f"isolated_{k}") or r["c_index"] is None:
                continue
            kind = r["setting"].split("_")[0]
            line = lines.setdefault((kind, r["node"]), {"kind": kind, "node": r["node"], "x": [], "y": []})
            line["x"].append(r["round"])
            line["y"].append(r["c_index"])
        series = [lines[key] for key in sorted(lines, key=lambda t: (t[1] == "global", t[1], t[0]))]
    return {"grid": grid.pk, "bars": bars,
            "rounds": {"k": k, "case": case, "series": series},
            "km": (grid.results or {}).get("km") or {"panels": []}}


def below_chance(grid: GridRun) -> list[str]:
    """Model settings whose mean C on the global test set is below 0.5: a model that ranks
    patients worse than chance has not learned (too few rounds or local epochs for it)."""
    summary = (grid.results or {}).get("summary") or []
    return sorted({f"{setting_label(r['setting'])} ({CASE_LABELS.get(r['case'], r['case']).split(' (')[0].lower()})"
                   for r in summary if r["eval"] == "global" and r.get("harrell_c") is not None
                   and r["harrell_c"] < 0.5 and not r["setting"].startswith("isolated")
                   and r["setting"] not in SCORE_LABELS})


def grid_section(user, study) -> dict:
    """Context of templates/experiments/grid_section.html on the study's comparison page."""
    from portal.experiments.forms import GridStartForm  # cycle: portal.experiments.forms imports this module

    grids = list(grids_visible_to(user).filter(study=study)[:20])
    latest = next((g for g in grids if g.status == GridRun.Status.FINISHED), None)
    can_start = can_start_grid(user)
    ctx = {"grids": [{"grid": g, "source": source_label(g), "settings": settings_label(g),
                      "last_line": last_line(g)} for g in grids],
           "can_start": can_start, "can_cancel": can_cancel_grid(user),
           "form": GridStartForm(study=study) if can_start else None,
           "active": [g.pk for g in grids if g.active], "latest": None}
    if latest is not None:
        ctx["latest"] = {"grid": latest, "source": source_label(latest), "settings": settings_label(latest),
                         "global": global_table(latest), "nodes": node_tables(latest),
                         "chart": chart_data(latest), "below_chance": below_chance(latest),
                         "km_seed": ((latest.results or {}).get("km") or {}).get("seed")}
    return ctx
