"""Reads on synthetic cohorts: who sees which, and the data card shown with each."""
from __future__ import annotations

from portal.synthesis.models import SyntheticCohort


def cohorts_visible_to(user):
    qs = SyntheticCohort.objects.select_related("run", "run__study")
    if not user.has_perm("synthesis.view_syntheticcohort"):
        return qs.none()
    return qs


def data_card(cohort: SyntheticCohort) -> list[tuple[str, str]]:
    """Label/value pairs describing the cohort in plain words (stored card first, then facts)."""
    rows = [("Generator", cohort.get_generator_display()),
            ("Rows", f"{cohort.row_count} synthetic patients"),
            ("Source study", cohort.run.study.title),
            ("Source run", f"run {cohort.run_id}")]
    for key, value in (cohort.data_card or {}).items():
        if isinstance(value, (dict, list)):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) \
                else ", ".join(map(str, value))
        rows.append((str(key).replace("_", " ").capitalize(), str(value)))
    return rows


def report_rows(cohort: SyntheticCohort) -> list[tuple[str, str]]:
    """The SAFE validation report flattened to label/value pairs (numbers rounded, no JSON)."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix} · {k}" if prefix else str(k), v)
        elif isinstance(value, float):
            out.append((prefix.replace("_", " "), f"{value:.3f}"))
        elif isinstance(value, list):
            out.append((prefix.replace("_", " "), ", ".join(map(str, value[:20]))))
        else:
            out.append((prefix.replace("_", " "), str(value)))

    walk("", cohort.validation_report or {})
    return out
