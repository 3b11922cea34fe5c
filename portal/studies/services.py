"""Writes on studies and runs."""
from __future__ import annotations

from django.db import transaction

from portal.audit.services import record
from portal.studies.models import Study


@transaction.atomic
def create_study(actor, data: dict) -> Study:
    datasets = data.pop("datasets", [])
    study = Study(owner=actor, organisation=getattr(actor, "organisation", None), **data)
    study.full_clean(exclude=["owner"])
    study.save()
    study.datasets.set(datasets)
    record(actor, "study.create", study)
    return study


@transaction.atomic
def update_study(actor, study: Study, data: dict) -> Study:
    datasets = data.pop("datasets", None)
    for key, value in data.items():
        setattr(study, key, value)
    study.full_clean()
    study.save()
    if datasets is not None:
        study.datasets.set(datasets)
    record(actor, "study.update", study, {"fields": sorted(data)})
    return study
