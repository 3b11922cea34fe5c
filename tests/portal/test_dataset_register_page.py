"""The "Register a dataset" page and API: who sees an announcement before and after registration,
who may register or change it, the guided form's errors, the node's limits, the audit trail, and
the study API refusing another hospital's unregistered announcement."""
from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.accounts.models import Organisation, User
from portal.accounts.roles import set_user_roles
from portal.audit.models import AuditEvent
from portal.datasets.models import Dataset
from portal.nodes.models import WorkerNode
from tests.conftest import fresh_p384_key

POLICY = {"sensitivity": "sensitive", "consent_scope": "broad", "purposes": ["analysis", "training"],
          "require_dp": True, "min_cell_count": 10, "expires_on": "2031-06-30"}
BODY = {"title": "MDS registry 2015-2024", "clinical_description": "Adults with MDS at diagnosis",
        "inclusion_start": "2015-01-01", "inclusion_end": "2024-12-31",
        "contact": "haematology@hosp-a.example.org", "policy": POLICY}
FORM = {"title": "MDS registry 2015-2024", "clinical_description": "Adults with MDS", "contact": "dpo@hosp-a.example.org",
        "inclusion_start": "2015-01-01", "inclusion_end": "2024-12-31", "sensitivity": "general",
        "consent_scope": "fine_grained", "purposes": ["training", "analysis"], "min_cell_count": "5",
        "expires_on": ""}


@pytest.fixture
def clinician_b(db, orgs):
    org_b, _ = Organisation.objects.get_or_create(code="hosp-b", defaults={"name": "Hospital B"})
    user = User.objects.create_user("clinician-b", organisation=org_b)
    set_user_roles(user, ["clinician"])
    return User.objects.get(pk=user.pk)


@pytest.fixture
def node_b(clinician_b, personas):
    return WorkerNode.objects.create(organisation=clinician_b.organisation, name="hosp-b-node",
                                     public_key=fresh_p384_key(), status=WorkerNode.Status.APPROVED,
                                     approved_at=timezone.now(), approved_by=personas["administrator"])


def _api(user):
    c = APIClient()
    c.force_authenticate(user)
    return c


def _web(client, user):
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_an_announcement_is_seen_only_by_its_hospital_until_registered(personas, mds_dataset, clinician_b):
    ds = mds_dataset
    for who in ("clinician", "coordinator", "node_operator", "administrator"):  # all of hospital A
        assert _api(personas[who]).get(f"/api/datasets/{ds.pk}/").status_code == 200, who
    for user in (clinician_b, personas["outsider"]):
        c = _api(user)
        assert c.get(f"/api/datasets/{ds.pk}/").status_code == 404
        assert ds.pk not in [d["id"] for d in c.get("/api/datasets/").json()["results"]]
        assert c.post(f"/api/datasets/{ds.pk}/registration/", BODY, format="json").status_code == 404
    r = _api(personas["clinician"]).post(f"/api/datasets/{ds.pk}/registration/", BODY, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["registered"] is True and r.json()["policy"] == POLICY
    b = _api(clinician_b)
    assert b.get(f"/api/datasets/{ds.pk}/").json()["title"] == BODY["title"]
    assert b.get("/api/datasets/?registered=true").json()["results"][0]["id"] == ds.pk
    # another hospital's clinician reads it but cannot change it; nothing changes, nothing is audited
    r = b.post(f"/api/datasets/{ds.pk}/registration/", {**BODY, "title": "mine now"}, format="json")
    assert r.status_code == 403 and "only a clinician of the hospital" in r.json()["detail"]
    # node operators keep their own hospital's scope
    assert _api(personas["outsider"]).get(f"/api/datasets/{ds.pk}/").status_code == 404
    ds.refresh_from_db()
    assert ds.title == BODY["title"]
    assert list(AuditEvent.objects.filter(action__startswith="dataset.regist").values_list("action", flat=True)) == [
        "dataset.register"]


@pytest.mark.django_db
def test_registration_errors_name_the_field_and_store_nothing(personas, mds_dataset):
    c = _api(personas["clinician"])
    url = f"/api/datasets/{mds_dataset.pk}/registration/"
    cases = [({**BODY, "policy": {**POLICY, "sensitivity": "secret"}}, "sensitivity"),
             ({**BODY, "policy": {**POLICY, "purposes": []}}, "purposes"),
             ({**BODY, "policy": {**POLICY, "min_cell_count": 5000}}, "min_cell_count"),
             ({**BODY, "policy": {**POLICY, "expires_on": "soon"}}, "expires_on"),
             ({**BODY, "policy": {**POLICY, "rows": [[1, 2]]}}, "rows"),
             ({**BODY, "inclusion_end": "2010-01-01"}, "inclusion_end"),
             ({**BODY, "title": ""}, "title"),
             ({k: v for k, v in BODY.items() if k != "contact"}, "contact"),
             ({**BODY, "patients": [{"age": 71}]}, "patients")]
    for body, field in cases:
        r = c.post(url, body, format="json")
        assert r.status_code == 400, (field, r.content)
        assert field in r.content.decode(), (field, r.content)
    for who in ("coordinator", "node_operator", "data_manager", "administrator"):
        assert _api(personas[who]).post(url, BODY, format="json").status_code == 403, who
    mds_dataset.refresh_from_db()
    assert mds_dataset.policy is None and mds_dataset.catalogued_at is None and mds_dataset.title == ""
    assert not AuditEvent.objects.filter(action__startswith="dataset.regist").exists()


@pytest.mark.django_db
def test_the_guided_form_registers_then_changes_with_the_audit_of_both(client, personas, mds_dataset, clinician_b):
    ds = mds_dataset
    WorkerNode.objects.filter(pk=ds.node_id).update(policy_limits={"*": {"min_cell_count": 5},
                                                                   "mds": {"require_dp": True}})
    web = _web(client, personas["clinician"])
    page = web.get("/datasets/register/").content.decode()
    assert f"/datasets/{ds.pk}/registration/" in page
    form = web.get(f"/datasets/{ds.pk}/registration/").content.decode()
    assert 'id="node-limits"' in form and "Differential privacy required" in form
    bad = web.post(f"/datasets/{ds.pk}/registration/", {**FORM, "purposes": []})
    assert bad.status_code == 200 and "Allow at least one purpose" in bad.content.decode()
    assert Dataset.objects.get(pk=ds.pk).catalogued_at is None
    ok = web.post(f"/datasets/{ds.pk}/registration/", FORM)
    assert ok.status_code == 302 and ok["Location"] == f"/datasets/{ds.pk}/"
    ds.refresh_from_db()
    assert ds.policy["purposes"] == ["analysis", "training"] and ds.policy["min_cell_count"] == 5
    detail = web.get(f"/datasets/{ds.pk}/").content.decode()
    assert "Change the registration" in detail and "What the node applies" in detail
    assert web.get("/datasets/register/").content.decode().count(f"/datasets/{ds.pk}/registration/") == 0
    web.post(f"/datasets/{ds.pk}/registration/", {**FORM, "consent_scope": "broad", "title": "MDS registry (v2 text)"})
    ds.refresh_from_db()
    assert ds.policy["consent_scope"] == "broad"
    change = AuditEvent.objects.get(action="dataset.registration_change")
    assert change.detail["policy_before"]["consent_scope"] == "fine_grained"
    assert change.detail["changed"] == ["title"]
    # hospital B's clinician reads the catalogue entry without the button, and is refused the form
    web = _web(client, clinician_b)
    assert "MDS registry (v2 text)" in web.get("/datasets/").content.decode()
    assert "Change the registration" not in web.get(f"/datasets/{ds.pk}/").content.decode()
    assert web.get(f"/datasets/{ds.pk}/registration/").status_code == 403
    assert web.post(f"/datasets/{ds.pk}/registration/", {**FORM, "title": "taken"}).status_code == 403
    assert Dataset.objects.get(pk=ds.pk).title == "MDS registry (v2 text)"


@pytest.mark.django_db
def test_the_catalogue_lists_registered_datasets_and_tells_the_hospital_what_waits(client, personas, mds_dataset):
    web = _web(client, personas["clinician"])
    page = web.get("/datasets/").content.decode()
    assert f"/datasets/{mds_dataset.pk}/\"" not in page and 'id="waiting"' in page
    _api(personas["clinician"]).post(f"/api/datasets/{mds_dataset.pk}/registration/", BODY, format="json")
    page = web.get("/datasets/").content.decode()
    assert f"/datasets/{mds_dataset.pk}/\"" in page and 'id="waiting"' not in page


@pytest.mark.django_db
def test_a_study_cannot_name_another_hospitals_unregistered_announcement(personas, node_b, clinician_b):
    ds_b = Dataset.objects.create(node=node_b, name="mds-b", version=1, use_case="MDS", cdm_version="1.0",
                                  patient_count=120, feature_schema=["age", "hb", "os_months", "os_event"],
                                  fingerprint="b" * 64)
    body = {"title": "MDS OS", "use_case": "MDS", "endpoint": "os", "features": ["age", "hb"],
            "model_kind": "deepsurv", "datasets": [ds_b.pk]}
    c = _api(personas["coordinator"])  # of hospital A
    r = c.post("/api/studies/", body, format="json")
    assert r.status_code == 400 and f'Invalid pk \\"{ds_b.pk}\\" - object does not exist.' in r.content.decode()
    _api(clinician_b).post(f"/api/datasets/{ds_b.pk}/registration/", {**BODY, "policy": {**POLICY, "require_dp": False,
                                                                                         "sensitivity": "general"}},
                           format="json")
    r = c.post("/api/studies/", body, format="json")
    assert r.status_code == 201, r.content


@pytest.mark.django_db
def test_node_limits_endpoint_gives_the_stricter_policy(personas, mds_dataset):
    WorkerNode.objects.filter(pk=mds_dataset.node_id).update(policy_limits={"*": {"min_cell_count": 20}})
    c = _api(personas["clinician"])
    c.post(f"/api/datasets/{mds_dataset.pk}/registration/", BODY, format="json")
    body = c.get(f"/api/datasets/{mds_dataset.pk}/node-limits/").json()
    assert body["limits"] == {"min_cell_count": 20} and body["registered_policy"]["min_cell_count"] == 10
    assert body["effective"]["min_cell_count"] == 20 and body["effective"]["consent_scope"] == "broad"
