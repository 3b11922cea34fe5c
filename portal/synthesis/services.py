"""Writes on synthetic cohorts: release through the privacy gate, downloads (both audited)."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from portal.audit.services import record
from portal.synthesis.models import SyntheticCohort


class CohortRefused(Exception):
    """The cohort cannot be released or downloaded; the message says why."""


def gate_passed(cohort: SyntheticCohort) -> bool:
    """True when the SAFE validation report says the privacy gate passed."""
    report = cohort.validation_report or {}
    gate = report.get("gate", report)
    if isinstance(gate, dict):
        for key in ("passed", "released", "ok"):
            if key in gate:
                return bool(gate[key])
    return False


@transaction.atomic
def release_cohort(actor, cohort: SyntheticCohort) -> SyntheticCohort:
    """Mark a cohort downloadable; refused unless its validation report passed the gate."""
    cohort = SyntheticCohort.objects.select_for_update().get(pk=cohort.pk)
    if cohort.released:
        raise CohortRefused(f"{cohort} is already released")
    if not gate_passed(cohort):
        raise CohortRefused(f"{cohort} did not pass the privacy gate; it cannot be released")
    cohort.released = True
    cohort.released_at = timezone.now()
    cohort.save(update_fields=["released", "released_at"])
    record(actor, "cohort.release", cohort)
    return cohort


def open_for_download(actor, cohort: SyntheticCohort):
    """The cohort's file opened for reading, after checking role and release; audited both ways."""
    if not actor.has_perm("synthesis.download_syntheticcohort"):
        record(actor, "cohort.download_refused", cohort, {"reason": "role"})
        raise CohortRefused("your role does not allow downloading synthetic cohorts")
    if not cohort.released:
        record(actor, "cohort.download_refused", cohort, {"reason": "not released"})
        raise CohortRefused(f"{cohort} has not been released: it has not passed the privacy gate")
    if not cohort.file:
        raise CohortRefused(f"{cohort} has no file stored")
    try:
        handle = cohort.file.open("rb")
    except FileNotFoundError:
        raise CohortRefused(f"the file of {cohort} is missing from storage") from None
    record(actor, "cohort.download", cohort, {"rows": cohort.row_count})
    return handle
