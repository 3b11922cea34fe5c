"""Dataset announcements from worker nodes: metadata only, versioned, never rewritten."""
from __future__ import annotations

from django.db import IntegrityError, transaction

from portal.audit.services import record
from portal.datasets.models import Dataset


class DatasetConflict(Exception):
    """The same name and version were announced before with other content."""


def announce(node, actor, data: dict) -> tuple[Dataset, bool]:
    """Record one dataset version; returns (dataset, created). Same fingerprint = idempotent."""
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
                quality_report=data.get("quality_summary", {}), fingerprint=data["fingerprint"],
            )
    except IntegrityError:
        return announce(node, actor, data)
    record(actor, "dataset.announce", ds, {"fingerprint": ds.fingerprint, "patients": ds.patient_count})
    return ds, True
