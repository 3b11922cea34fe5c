"""Dataset announcements from worker nodes: metadata only, versioned, never rewritten."""
from __future__ import annotations

from django.db import IntegrityError, transaction

from portal.audit.services import record
from portal.datasets.metadata import row_shaped_paths, validate_quality_summary
from portal.datasets.models import Dataset


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
