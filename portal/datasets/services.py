"""Dataset announcements from worker nodes: metadata only, versioned, never rewritten."""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from fl_engine.node import policy as node_policy
from portal.audit.services import record
from portal.datasets.metadata import row_shaped_paths, validate_quality_summary
from portal.datasets.models import Dataset
from portal.datasets.selectors import can_register


class DatasetConflict(Exception):
    """The same name and version were announced before with other content."""


def announce(node, actor, data: dict) -> tuple[Dataset, bool]:
    """Record one dataset version; returns (dataset, created). Same fingerprint = idempotent.
    A quality summary off the schema (portal.datasets.metadata) raises MetadataRefused."""
    summary = validate_quality_summary(data.get("quality_summary"))
    existing = Dataset.objects.filter(node=node, name=data["name"], version=data["version"]).first()
    if existing:
        if existing.fingerprint != data["fingerprint"]:
            raise DatasetConflict(
                f"{node.name}/{data['name']} version {data['version']} is registered with fingerprint "
                f"{existing.fingerprint[:12]}…; changed data must be announced as a new version")
        return existing, False
    try:
        with transaction.atomic():
            ds = Dataset.objects.create(
                node=node, name=data["name"], version=data["version"], use_case=data["use_case"],
                cdm_version=data["schema_version"], patient_count=data["patient_count"],
                feature_schema=data.get("feature_schema", []),
                quality_report=summary, fingerprint=data["fingerprint"],
            )
    except IntegrityError:
        return announce(node, actor, data)
    record(actor, "dataset.announce", ds, {"fingerprint": ds.fingerprint, "patients": ds.patient_count})
    return ds, True


def refuse_metadata(node, actor, errors: dict, body, scalar_fields=()) -> None:
    """Audit a refused announcement (`dataset.metadata_refused`): which fields, and whether the
    body looked like patient rows (searched outside `scalar_fields`, the announcement's own
    name / version / ... fields). Field names only; the refused values are never stored."""
    body = dict(body) if hasattr(body, "keys") else {"body": body}
    rows = row_shaped_paths({k: v for k, v in body.items() if k not in scalar_fields}, "")
    record(actor, "dataset.metadata_refused", node,
           {"fields": sorted(str(k)[:60] for k in errors)[:20],
            "row_shaped": bool(rows), "row_shaped_fields": sorted({p.lstrip(".")[:60] for p, _ in rows})[:20]})


class RegistrationRefused(Exception):
    """The actor may not register or change this dataset, or the form is invalid."""


REGISTRATION_FIELDS = ("title", "clinical_description", "inclusion_start", "inclusion_end", "contact")


def register(actor, ds: Dataset, data: dict, policy: dict) -> Dataset:
    """A clinician of the node's hospital registers an announced dataset (or changes its
    registration): descriptive fields and the policy (fl_engine.node.policy) the node will
    apply. The dataset enters the catalogue at its first registration. Audited with the fields
    and the policy before and after; nothing changes on a refusal."""
    if not can_register(actor, ds):
        raise RegistrationRefused("only a clinician of the hospital holding the dataset may register it")
    try:
        clean = node_policy.validate_policy(policy)
    except node_policy.PolicyError as exc:
        raise RegistrationRefused(str(exc)) from None
    if not clean["purposes"]:
        raise RegistrationRefused("purposes: allow at least one purpose, or leave the dataset unregistered")
    start = data.get("inclusion_start", ds.inclusion_start)
    end = data.get("inclusion_end", ds.inclusion_end)
    if start and end and start > end:
        raise RegistrationRefused("inclusion_end: before the inclusion start")
    for k in ("title", "contact"):
        if not str(data.get(k, getattr(ds, k)) or "").strip():
            raise RegistrationRefused(f"{k}: required")
    with transaction.atomic():
        ds = Dataset.objects.select_for_update().get(pk=ds.pk)
        before = ds.policy
        changed = sorted(k for k in REGISTRATION_FIELDS if k in data and data[k] != getattr(ds, k))
        for k in REGISTRATION_FIELDS:
            if k in data:
                setattr(ds, k, data[k])
        ds.policy = clean
        first = ds.catalogued_at is None
        if first:
            ds.catalogued_by, ds.catalogued_at = actor, timezone.now()
        ds.save()
        record(actor, "dataset.register" if first else "dataset.registration_change", ds,
               {"fields": sorted(k for k in REGISTRATION_FIELDS if k in data), "changed": changed,
                "policy_before": before, "policy": clean})
    return ds
