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
