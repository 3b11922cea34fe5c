"""Registering an announced dataset with its policy (portal.datasets.services.register): who may,
what is audited, what the node fetches, and how broad consent counts as an approval."""
from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from portal.datasets import services
from portal.studies import services as study_services
from portal.studies.models import Study
from portal.studies.selectors import dataset_compatibility_errors

FORM = {"title": "MDS registry 2015-2024", "clinical_description": "Adults with MDS at diagnosis",
        "contact": "haematology-dpo@hosp-a.example.org"}


def _study(personas, ds):
    st = Study.objects.create(title="S", use_case="MDS", endpoint="os", owner=personas["coordinator"],
                              model_kind="deepsurv", features=["age", "hb"])
    st.datasets.set([ds])
    return st


@pytest.mark.django_db
def test_only_a_clinician_of_the_hospital_registers_and_every_change_is_audited(personas, mds_dataset):
    for who in ("outsider", "node_operator", "coordinator"):
        with pytest.raises(services.RegistrationRefused, match="only a clinician"):
            services.register(personas[who], mds_dataset, FORM, {"consent_scope": "broad"})
    mds_dataset.refresh_from_db()
    assert mds_dataset.policy is None and mds_dataset.catalogued_at is None
    with pytest.raises(services.RegistrationRefused, match="sensitivity"):
        services.register(personas["clinician"], mds_dataset, FORM, {"sensitivity": "secret"})
    ds = services.register(personas["clinician"], mds_dataset, FORM, {"consent_scope": "broad"})
    assert ds.policy["consent_scope"] == "broad" and ds.catalogued_by == personas["clinician"]
    services.register(personas["clinician"], ds, {}, {"consent_scope": "fine_grained", "sensitivity": "sensitive"})
    events = list(AuditEvent.objects.filter(object_id=str(ds.pk), action__startswith="dataset.reg").order_by("id"))
    assert [e.action for e in events] == ["dataset.register", "dataset.registration_change"]
    assert events[1].detail["policy_before"]["consent_scope"] == "broad"
    assert events[1].detail["policy"]["sensitivity"] == "sensitive"


@pytest.mark.django_db
def test_the_node_fetches_the_registered_policy_with_its_token(api, personas, approved_node, mds_dataset):
    node, token = approved_node
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/nodes/approvals/").json()["policies"] == []
    services.register(personas["clinician"], mds_dataset, FORM, {"consent_scope": "broad", "expires_on": "2030-01-31"})
    got = client.get("/api/nodes/approvals/").json()["policies"]
    assert got == [{"dataset": "mds", "version": "1", "fingerprint": "f" * 64, "use_case": "MDS",
                    "policy": {**got[0]["policy"], "consent_scope": "broad", "expires_on": "2030-01-31"}}]


@pytest.mark.django_db
def test_broad_consent_starts_a_new_study_of_its_use_case_without_approval_fine_grained_does_not(
        personas, mds_dataset):
    st = _study(personas, mds_dataset)
    with pytest.raises(study_services.RunRefused, match="awaiting the node operators' approval"):
        study_services.check_startable(st, [mds_dataset])  # no policy: as before
    services.register(personas["clinician"], mds_dataset, FORM, {"consent_scope": "fine_grained"})
    with pytest.raises(study_services.RunRefused, match="awaiting"):
        study_services.check_startable(st, [mds_dataset])
    services.register(personas["clinician"], mds_dataset, FORM, {"consent_scope": "broad"})
    study_services.check_startable(st, [mds_dataset])
    assert study_services.approval_state(st)[0]["basis"] == "broad consent"


@pytest.mark.django_db
def test_the_portal_explains_why_a_dataset_cannot_be_used_and_what_would_make_it_usable(personas, mds_dataset):
    services.register(personas["clinician"], mds_dataset, FORM,
                      {"sensitivity": "sensitive", "purposes": ["analysis"], "expires_on": "2020-01-01"})
    mds_dataset.refresh_from_db()
    got = dataset_compatibility_errors([mds_dataset], "MDS", "os", [], [],
                                       privacy={"dp_enabled": False, "min_cell_count": 5})
    text = " | ".join(got)
    assert "expired on 2020-01-01" in text and "renew" in text
    assert "purpose 'training' is not allowed" in text
    assert "enable DP-FedAvg" in text
    # without the study's privacy settings (older callers) only the expiry is judged
    assert [p for p in dataset_compatibility_errors([mds_dataset], "MDS", "os", [], []) if "expired" in p]
