"""Reads for studies and runs."""
from __future__ import annotations

from fl_engine.schema import SCHEMAS


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


def dataset_compatibility_errors(datasets, use_case, endpoint, features, groups) -> list[str]:
    """Why each dataset cannot serve the study (empty when all can)."""
    problems = []
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
    return problems


def runs_visible_to(user):
    from portal.studies.models import Run

    qs = Run.objects.select_related("study", "model_version").prefetch_related("metrics")
    if user.has_perm("studies.view_modelversion") or user.has_perm("nodes.approve_workernode"):
        return qs
    # Node operators: runs of studies that use their organisation's datasets.
    return qs.filter(study__datasets__node__organisation=user.organisation).distinct()


def studies_visible_to(user):
    from portal.studies.models import Study

    qs = Study.objects.select_related("owner").prefetch_related("datasets")
    if user.has_perm("studies.view_modelversion") or user.has_perm("nodes.approve_workernode"):
        return qs
    return qs.filter(datasets__node__organisation=user.organisation).distinct()
