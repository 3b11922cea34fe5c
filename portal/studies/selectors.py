"""Reads for studies and runs."""
from __future__ import annotations

import datetime

from fedhaem_kernel.atrest import AtRestError
from fedhaem_kernel.schema import SCHEMAS
from fl_engine.node import policy as node_policy
from fl_engine.scores.conventional import COVERAGE_MIN, LABELS, coverage_text, pooled_coverage
from portal.core.at_rest import read_file
from portal.nodes.selectors import local_limits_for
from portal.studies.models import ModelVersion, Run, Study


def required_columns(use_case: str, endpoint: str, features: list[str], groups: list[str]) -> list[str]:
    """Columns a dataset must carry for a study: explicit features, else at least one column of
    each chosen group, plus the endpoint's time and event columns."""
    schema = SCHEMAS.get(use_case)
    if schema is None:
        return list(features)
    ep = [e for e in schema.endpoints if e.name == endpoint]
    cols = list(features)
    if ep:
        cols += [ep[0].time_column, ep[0].event_column]
    return cols


def applied_policy(ds) -> dict | None:
    """The policy the dataset's node applies (fl_engine.node.policy.effective_policy): the
    registered one (DEFAULT_POLICY when none) tightened by the node's announced local limits;
    None when neither is set (the per-study approval of old). An unusable policy counts as none."""
    limits = local_limits_for(ds.node, ds.name)
    if not ds.policy and not limits:
        return None
    try:
        return node_policy.effective_policy(ds.policy or None, limits)
    except node_policy.PolicyError:
        return None


def dataset_compatibility_errors(datasets, use_case, endpoint, features, groups, *, privacy: dict | None = None,
                                 purpose: str = "training") -> list[str]:
    """Why each dataset cannot serve the study (empty when all can). A dataset's policy (the
    registered one tightened by its node's announced limits, `applied_policy`) adds its reasons
    and what would make the dataset usable: its expiry always, the purpose (training, synthesis,
    analysis: fl_engine.node.policy.purpose_of) and privacy minimums when `privacy` (the study's
    privacy settings) is given."""
    problems = []
    today = datetime.date.today()
    schema = SCHEMAS.get(use_case)
    needed = required_columns(use_case, endpoint, features or [], groups or [])
    for ds in datasets:
        if ds.use_case != use_case:
            problems.append(f"{ds}: use case {ds.use_case}, the study is {use_case}")
            continue
        if ds.node.status != "approved":
            problems.append(f"{ds}: node {ds.node.name} is {ds.node.status}")
        present = set(ds.feature_schema or [])
        missing = [c for c in needed if c not in present]
        if missing:
            problems.append(f"{ds}: lacks {', '.join(missing)}")
        if schema is not None and groups and not features:
            for g in groups:
                if g == "embedding":
                    ok = any(e.matches(c) for e in schema.embeddings for c in present)
                else:
                    ok = any(c in present for c in schema.group(g))
                if not ok:
                    problems.append(f"{ds}: has no {g} columns")
        policy = applied_policy(ds)
        if policy:
            reasons = node_policy.run_problems(
                policy, purpose=purpose, dp_enabled=bool((privacy or {}).get("dp_enabled")),
                min_cell_count=int((privacy or {}).get("min_cell_count", 10**6)), today=today)
            if privacy is None:  # without the study's settings only the expiry can be judged
                reasons = [r for r in reasons if "expired" in r]
            problems += [f"{ds}: {r}" for r in reasons]
    return problems


def runs_visible_to(user):
    qs = Run.objects.select_related("study", "model_version").prefetch_related("metrics")
    if user.has_perm("studies.view_modelversion") or user.has_perm("nodes.approve_workernode"):
        return qs
    # Node operators: runs of studies that use their organisation's datasets.
    return qs.filter(study__datasets__node__organisation=user.organisation).distinct()


def studies_visible_to(user):
    qs = Study.objects.select_related("owner").prefetch_related("datasets")
    if user.has_perm("studies.view_modelversion") or user.has_perm("nodes.approve_workernode"):
        return qs
    return qs.filter(datasets__node__organisation=user.organisation).distinct()


def run_chart_data(run) -> dict:
    """Everything the run page draws, as JSON-ready lists: C-index per round per node and
    global, training loss per round, rounds done."""
    series: dict[str, dict[str, list]] = {}
    loss: dict[str, list] = {"x": [], "y": []}
    done = 0
    for m in run.metrics.all().order_by("round"):
        if m.name == "c_index":
            s = series.setdefault(m.node, {"x": [], "y": []})
            s["x"].append(m.round)
            s["y"].append(round(m.value, 4))
            if m.node == "global":
                done = max(done, m.round)
        elif m.name in ("loss", "train_loss") and m.node == "global":
            loss["x"].append(m.round)
            loss["y"].append(round(m.value, 5))
    return {"run": run.pk, "rounds": run.rounds, "done": done, "c_index": series, "loss": loss,
            "status": run.status}


def final_metrics(run) -> dict:
    """Last-round C-index per node and global, and rounds done: {"global": c, "nodes": {name: c},
    "round": r}; values None when the run recorded none."""
    last: dict[str, tuple[int, float]] = {}
    for m in run.metrics.all():
        if m.name == "c_index" and (m.node not in last or m.round > last[m.node][0]):
            last[m.node] = (m.round, m.value)
    glob = last.pop("global", None)
    return {"global": glob[1] if glob else None, "round": glob[0] if glob else 0,
            "nodes": {k: v[1] for k, v in sorted(last.items())}}


COMPARISON_SETTINGS = (
    ("centralised", "Centralised (all patients pooled; a reference the federation cannot compute)"),
    ("federated", "Federated (this platform)"),
    ("isolated", "Isolated (each hospital alone, patient-weighted)"),
    ("conventional", "Best conventional prognostic score"),
)


def study_comparison(study, runs) -> list[dict]:
    """One row per finished run: held-out C-index (Harrell) per setting, overall and per hospital.

    From the run's last round: federated = the global model (`c_index`); isolated = each node's
    model trained on its own patients only (`isolated_c_index`); conventional = the use case's
    scores on the same held-out patients (`<score>_c_index`, fl_engine.scores.conventional);
    overall values are patient-weighted over hospitals. Centralised needs pooled patients, which
    a federation never has: shown only when the registered model carries `centralised_c_index`
    (e.g. from the experiment grid run where pooling is allowed)."""
    rows = []
    for run in runs:
        if run.status != "finished":
            continue
        last_round = max((m.round for m in run.metrics.all()), default=0)
        at: dict[str, dict[str, float]] = {}
        for m in run.metrics.all():
            if m.round == last_round:
                at.setdefault(m.node, {})[m.name] = m.value
        glob = at.pop("global", {})
        stored = dict(getattr(getattr(run, "model_version", None), "metrics", None) or {})
        coverage = score_coverage(glob, at)
        # a score computed on under COVERAGE_MIN of the test patients is not compared: no C
        conventional = {c["label"]: c["c"] for c in coverage if c["comparable"] and c["c"] is not None}
        values = {"federated": glob.get("c_index"), "centralised": stored.get("centralised_c_index"),
                  "isolated": glob.get("isolated_c_index"),
                  "conventional": max(conventional.values()) if conventional else None}
        hospitals = []
        for node, m in sorted(at.items()):
            fed, iso = m.get("c_index"), m.get("isolated_c_index")
            hospitals.append({
                "node": node, "n": int(m["n_holdout"]) if "n_holdout" in m else None, "federated": fed,
                "isolated": iso, "gain": fed - iso if fed is not None and iso is not None else None,
                "scores": {c["label"]: hospital_score(m, c["key"]) for c in coverage}})
        rows.append({"run": run, "values": values, "conventional": conventional, "coverage": coverage,
                     "hospitals": hospitals, "nodes": {h["node"]: h["federated"] for h in hospitals},
                     "curves": run_curves(run)})
    return rows


def score_coverage(glob: dict, per_node: dict[str, dict]) -> list[dict]:
    """Per conventional score of a run's comparison: {"key", "label", "c" (the patient-weighted
    C, None when not compared), "n", "of", "fraction", "comparable", "withheld" (hospitals whose
    small count was suppressed), "text" ("IPSS-M C 0.712 on 143 of 154 held-out test patients" or
    the refusal)}. Counts come from the hospitals' figures (fl_engine.scores.conventional
    .pooled_coverage), so runs recorded before coverage was reported read the same way."""
    out = []
    for key, c in pooled_coverage(per_node).items():
        comparable = c["sufficient"]
        cidx = glob.get(f"{key}_c_index") if comparable else None
        text = coverage_text(key, c["n"], c["of"], cidx, "held-out test patients")
        if c["suppressed_nodes"]:
            text += f" ({c['suppressed_nodes']} hospital(s) withheld a small count: at least {c['n']})"
        out.append({"key": key, "label": LABELS[key], "c": cidx, "n": c["n"], "of": c["of"],
                    "fraction": c["fraction"], "comparable": comparable, "withheld": c["suppressed_nodes"],
                    "text": text})
    return out


def hospital_score(m: dict, key: str) -> dict:
    """One hospital's figure for a score: {"c" (None unless computed on at least COVERAGE_MIN of
    its held-out patients), "n", "of", "comparable", "withheld" (count suppressed: small cell)}."""
    of = int(m["n_holdout"]) if "n_holdout" in m else None
    if m.get(f"{key}_suppressed"):
        return {"c": None, "n": None, "of": of, "comparable": False, "withheld": True}
    n = int(m[f"{key}_n"]) if f"{key}_n" in m else None
    comparable = bool(n is not None and of and n / of >= COVERAGE_MIN)
    return {"c": m.get(f"{key}_c_index") if comparable else None, "n": n, "of": of,
            "comparable": comparable, "withheld": False}


def run_curves(run) -> dict:
    """Kaplan-Meier curves by risk group of a finished run's pooled held-out patients (from the
    counts the hospitals sent in the comparison phase), grouped by score: {"times": [...],
    "panels": [{"title", "groups": [{category, n, survival}]}]}; empty when not computed."""
    import json
    from pathlib import Path

    from django.conf import settings

    path = Path(settings.VAR_DIR) / "runs" / str(run.pk) / "model" / "model.json"
    try:
        curves = json.loads(read_file(path)).get("curves") or {}  # encrypted at rest
    except AtRestError as exc:
        import logging

        logging.getLogger(__name__).error("run %s: model.json unreadable: %s", run.pk, exc)
        return {}
    except (OSError, ValueError):
        return {}
    if not curves.get("groups"):
        return {}
    panels: dict[str, dict] = {}
    for g in curves["groups"]:
        title = "FedHaem model: predicted 2-year survival" if g["score"] == "model" else g["label"]
        panels.setdefault(g["score"], {"title": title, "groups": []})["groups"].append(
            {"category": g["category"], "n": g["n"], "survival": g["survival"]})
    return {"times": curves["times"], "panels": list(panels.values())}


def comparison_chart(row: dict) -> dict:
    """Grouped bars of one run's comparison row: one group per hospital + "All hospitals"
    (patient-weighted), one series per setting (federated, isolated, each conventional score)."""
    groups = [h["node"] for h in row["hospitals"]] + ["All hospitals"]
    series = [{"name": "Federated", "values": [h["federated"] for h in row["hospitals"]] + [row["values"]["federated"]]},
              {"name": "Isolated", "values": [h["isolated"] for h in row["hospitals"]] + [row["values"]["isolated"]]}]
    for label, overall in row["conventional"].items():
        series.append({"name": label, "values": [h["scores"][label]["c"] if label in h["scores"] else None
                                                 for h in row["hospitals"]] + [overall]})
    return {"run": row["run"].pk, "labels": groups, "series": series}


def models_visible_to(user):
    """Registered models of the runs `user` may see (the caller checks studies.view_modelversion)."""
    return ModelVersion.objects.filter(run__in=runs_visible_to(user).values("pk")).select_related("run", "run__study")
