"""An approval is bound to what was approved; a node's identity comes from its key. Through the
API with the persona fixtures (no Flower process: tests/security/test_participation.py and
test_node_identity.py run the same rules with real processes)."""
from __future__ import annotations

import pytest

from tests.conftest import fresh_p384_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(personas, approved_node):
    from portal.datasets.models import Dataset
    from portal.studies.models import Study

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=300,
                                feature_schema=["age", "hb", "plt", "os_months", "os_event", "lfs_months", "lfs_event"],
                                fingerprint="f" * 64)
    s = Study(title="Bound", use_case="MDS", owner=personas["coordinator"], min_nodes=1,
              features=["age", "hb"], hyperparameters={"local_epochs": 1}, rounds=4)
    s.full_clean()  # as the form and the API store it: parameters with their defaults
    s.save()
    s.datasets.add(ds)
    return s


def _approve(api, personas, study):
    ds = study.datasets.get()
    r = api(personas["node_operator"]).post(f"/api/studies/{study.pk}/approvals/",
                                            {"dataset": ds.pk, "decision": "approved"}, format="json")
    assert r.status_code == 200, r.content


@pytest.mark.parametrize("change", [
    {"features": ["age", "hb", "plt"]},
    {"privacy": {"min_patients_per_node": 1, "min_cell_count": 1, "dp_enabled": False, "dp_clip_norm": 1.0,
                 "dp_noise_multiplier": 1.0}},
    {"hyperparameters": {"local_epochs": 3}},
    {"rounds": 40},
    {"endpoint": "lfs"},
])
def test_an_edit_after_approval_makes_the_approval_stale(change, study, personas, api, client):
    from portal.audit.models import AuditEvent

    _approve(api, personas, study)
    coord = api(personas["coordinator"])
    patched = coord.patch(f"/api/studies/{study.pk}/", change, format="json")
    assert patched.status_code == 200, patched.content
    refused = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 2}, format="json")
    assert refused.status_code == 409 and "approve again" in refused.json()["detail"]
    assert [a["stale"] for a in coord.get(f"/api/studies/{study.pk}/approvals/").json()] == [True]
    assert AuditEvent.objects.filter(action="study.approvals_stale", object_id=str(study.pk)).exists()
    client.force_login(personas["coordinator"])
    page = client.get(f"/studies/{study.pk}/").content.decode()
    assert "must approve again" in page and "Hospital A" in page and "Approval outdated" in page
    _approve(api, personas, study)  # the hospital approves the new settings
    started = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 2}, format="json")
    assert started.status_code == 201, started.json()
    assert "must approve again" not in client.get(f"/studies/{study.pk}/").content.decode()


def test_an_edit_that_changes_nothing_run_relevant_keeps_the_approval(study, personas, api):
    _approve(api, personas, study)
    coord = api(personas["coordinator"])
    assert coord.patch(f"/api/studies/{study.pk}/", {"title": "Renamed", "description": "x"},
                       format="json").status_code == 200
    assert coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 2}, format="json").status_code == 201


def test_a_run_cannot_ask_for_more_rounds_than_approved(study, personas, api):
    _approve(api, personas, study)
    r = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/runs/", {"rounds": 5}, format="json")
    assert r.status_code in (400, 409) and "4" in str(r.json())


def test_nodes_fetch_only_their_own_current_approvals(study, personas, api, approved_node, orgs):
    from rest_framework.test import APIClient

    from portal.nodes import services as node_services
    from portal.studies import services

    node, token = approved_node
    _approve(api, personas, study)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    got = client.get("/api/nodes/approvals/").json()
    assert got["node"] == node.name
    assert got["approvals"] == [{"study": str(study.pk), "dataset": "mds", "version": "1", "fingerprint": "f" * 64,
                                 "settings_hash": services.settings_hash(study)}]
    # persons cannot read it; another node sees none of hospital A's approvals
    assert api(personas["coordinator"]).get("/api/nodes/approvals/").status_code == 403
    other = node_services.register_node(personas["administrator"], orgs["hosp-z"], "hosp-z-node", fresh_p384_key())
    other_client = APIClient()
    other_client.credentials(HTTP_AUTHORIZATION=f"Token {node_services.approve_node(personas['administrator'], other)}")
    assert other_client.get("/api/nodes/approvals/").json()["approvals"] == []
    # withdrawn: gone from the node's list at once
    services.decide_approval(personas["node_operator"], study, study.datasets.get(), "rejected")
    assert client.get("/api/nodes/approvals/").json()["approvals"] == []


def test_a_nodes_refusal_is_audited(approved_node):
    from rest_framework.test import APIClient

    from portal.audit.models import AuditEvent

    node, token = approved_node
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    r = client.post("/api/nodes/refusals/", {"study": "3", "run": "9", "dataset": "mds",
                                              "reason": "no approval of study 3"}, format="json")
    assert r.status_code == 201
    ev = AuditEvent.objects.get(action="node.run_refused")
    assert ev.object_id == str(node.pk) and ev.detail["run"] == "9"


def test_a_heartbeat_cannot_claim_another_nodes_identity(approved_node, personas, orgs):
    from rest_framework.test import APIClient

    from portal.audit.models import AuditEvent
    from portal.nodes import services as node_services
    from portal.nodes.models import WorkerNode

    node, token = approved_node
    victim = node_services.register_node(personas["administrator"], orgs["hosp-z"], "victim", fresh_p384_key())
    node_services.approve_node(personas["administrator"], victim)
    WorkerNode.objects.filter(pk=victim.pk).update(flower_node_id="4242")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post("/api/nodes/heartbeat/", {"status": "online", "flower_node_id": "4242"},
                       format="json").status_code == 200
    node.refresh_from_db()
    assert node.flower_node_id != "4242"
    assert AuditEvent.objects.filter(action="node.identity_mismatch", object_id=str(node.pk)).exists()


def test_one_key_names_one_node(personas, orgs, api, approved_node):
    node, _ = approved_node
    r = api(personas["outsider"]).post("/api/nodes/", {"name": "copycat", "organisation": "hosp-z",
                                                        "public_key": node.public_key}, format="json")
    assert r.status_code == 400 and "already registered" in str(r.json())


def test_a_revoked_nodes_retired_key_cannot_come_back_but_a_new_key_can(approved_node, personas, api):
    from portal.nodes import services as node_services
    from portal.nodes.models import WorkerNode

    node, _ = approved_node
    admin = api(personas["administrator"])
    assert admin.post(f"/api/nodes/{node.pk}/revoke/").status_code == 200
    # until the key sync has unregistered the old key at the SuperLink, no new key is taken
    pending = api(personas["node_operator"]).post(f"/api/nodes/{node.pk}/replace-key/",
                                                  {"public_key": fresh_p384_key()}, format="json")
    assert pending.status_code == 409 and "still registered" in pending.json()["detail"]
    # the key sync unregistered it at the SuperLink: Flower retires the key for good
    WorkerNode.objects.filter(pk=node.pk).update(key_retired=True, flower_node_id="")
    again = admin.post(f"/api/nodes/{node.pk}/approve/")
    assert again.status_code == 409 and "new key" in again.json()["detail"]
    operator = api(personas["node_operator"])
    same = operator.post(f"/api/nodes/{node.pk}/replace-key/", {"public_key": node.public_key}, format="json")
    assert same.status_code == 400
    outsider = api(personas["outsider"]).post(f"/api/nodes/{node.pk}/replace-key/",
                                               {"public_key": fresh_p384_key()}, format="json")
    assert outsider.status_code in (403, 404)
    new = operator.post(f"/api/nodes/{node.pk}/replace-key/", {"public_key": fresh_p384_key()}, format="json")
    assert new.status_code == 200, new.content
    assert admin.post(f"/api/nodes/{node.pk}/approve/").status_code == 200
    node.refresh_from_db()
    assert node.status == "approved" and not node.key_retired
    with pytest.raises(node_services.NodeStateError):
        node_services.replace_key(personas["administrator"], node, fresh_p384_key())  # approved: revoke first
