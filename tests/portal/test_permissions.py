"""Every API endpoint, every persona: who may do what. One table, read top to bottom."""
from __future__ import annotations

import pytest

from tests.conftest import fresh_p384_key

pytestmark = pytest.mark.django_db

ALL = ["clinician", "coordinator", "data_manager", "node_operator", "administrator", "outsider", "norole"]
ROLES = [p for p in ALL if p != "norole"]
SCIENCE = ["clinician", "coordinator", "data_manager", "administrator"]  # model registry readers


def expect(allowed: list[str], ok: int, denied: int = 403) -> dict:
    return {p: (ok if p in allowed else denied) for p in ALL}


@pytest.fixture
def world(personas, approved_node, orgs, p384_public_key):
    from portal.datasets.models import Dataset
    from portal.studies.models import Study

    node, token = approved_node
    ds = Dataset.objects.create(node=node, name="mds-cohort", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=120, feature_schema=["age", "hb", "os_months", "os_event"],
                                fingerprint="a" * 64)
    study = Study.objects.create(title="Perm study", use_case="MDS", owner=personas["coordinator"],
                                 hyperparameters={})
    study.datasets.add(ds)
    from portal.nodes.services import register_node

    pending = register_node(personas["administrator"], orgs["hosp-a"], "pending-node", p384_public_key)
    from portal.studies.models import Run

    run = Run.objects.create(study=study, rounds=2, created_by=personas["coordinator"])
    from portal.studies.models import ModelVersion
    from portal.studies.services import run_dir

    finished = Run.objects.create(study=study, rounds=2, created_by=personas["coordinator"], status="finished")
    model = ModelVersion.objects.create(run=finished, mlflow_run_id="m1", registered_model_name="fedhaem-mds-os",
                                        version="1")
    (run_dir(finished) / "model").mkdir(parents=True, exist_ok=True)
    from portal.core.at_rest import write_file  # encrypted at rest, as the conclusion writes it

    write_file(run_dir(finished) / "model" / "model.json", b"{}")
    return {"node": node, "token": token, "dataset": ds, "study": study, "pending": pending,
            "key": fresh_p384_key(), "run": run, "model": model}


def _study_payload(world):
    return {"title": "New study", "use_case": "MDS", "endpoint": "os", "datasets": [world["dataset"].pk],
            "features": ["age", "hb"], "model_kind": "deepsurv", "rounds": 3}


CASES = [
    # (id, method, url(world), payload(world), expectations)
    ("me", "get", lambda w: "/api/me/", None, expect(ALL, 200)),
    ("me-timezone", "patch", lambda w: "/api/me/", lambda w: {"timezone": "Europe/Madrid"}, expect(ALL, 200)),
    ("organisations-list", "get", lambda w: "/api/organisations/", None, expect(ROLES, 200)),
    ("organisations-create", "post", lambda w: "/api/organisations/",
     lambda w: {"code": "hosp-new", "name": "New hospital"}, expect(["administrator"], 201)),
    ("nodes-list", "get", lambda w: "/api/nodes/", None, expect(ROLES, 200)),
    ("nodes-detail", "get", lambda w: f"/api/nodes/{w['node'].pk}/", None,
     {**expect(ROLES, 200), "outsider": 404}),
    ("nodes-create", "post", lambda w: "/api/nodes/",
     lambda w: {"name": "new-node", "organisation": "hosp-a", "public_key": w["key"]},
     {**expect(["administrator", "node_operator"], 201), "outsider": 400}),
    ("nodes-approve", "post", lambda w: f"/api/nodes/{w['pending'].pk}/approve/", None,
     expect(["administrator"], 200)),
    ("nodes-revoke", "post", lambda w: f"/api/nodes/{w['node'].pk}/revoke/", None,
     expect(["administrator"], 200)),
    ("nodes-heartbeat", "post", lambda w: "/api/nodes/heartbeat/", lambda w: {"status": "ok"}, expect([], 200)),
    ("nodes-datasets", "post", lambda w: "/api/nodes/datasets/",
     lambda w: {"name": "x", "version": 1, "use_case": "MDS", "schema_version": "1.0", "patient_count": 1,
                "fingerprint": "b" * 64}, expect([], 201)),
    ("datasets-list", "get", lambda w: "/api/datasets/", None, expect(ROLES, 200)),
    ("datasets-detail", "get", lambda w: f"/api/datasets/{w['dataset'].pk}/", None,
     {**expect(ROLES, 200), "outsider": 404}),
    ("studies-list", "get", lambda w: "/api/studies/", None, expect(ROLES, 200)),
    ("studies-create", "post", lambda w: "/api/studies/", _study_payload, expect(["coordinator"], 201)),
    ("studies-update", "patch", lambda w: f"/api/studies/{w['study'].pk}/", lambda w: {"rounds": 4},
     expect(["coordinator"], 200)),
    ("studies-clone", "post", lambda w: f"/api/studies/{w['study'].pk}/clone/", None,
     expect(["coordinator"], 201)),
    ("studies-runs-list", "get", lambda w: f"/api/studies/{w['study'].pk}/runs/", None,
     {**expect(ROLES, 200), "outsider": 404}),
    # the coordinator may start runs; this one waits for the node operators' approval (409)
    ("studies-runs-start", "post", lambda w: f"/api/studies/{w['study'].pk}/runs/", lambda w: {"rounds": 2},
     expect(["coordinator"], 409)),
    ("studies-approvals-list", "get", lambda w: f"/api/studies/{w['study'].pk}/approvals/", None,
     {**expect(ROLES, 200), "outsider": 404}),
    ("studies-approvals-decide", "post", lambda w: f"/api/studies/{w['study'].pk}/approvals/",
     lambda w: {"dataset": w["dataset"].pk, "decision": "approved"},
     {**expect(["node_operator"], 200), "outsider": 404}),
    ("runs-list", "get", lambda w: "/api/runs/", None, expect(ROLES, 200)),
    ("runs-detail", "get", lambda w: f"/api/runs/{w['run'].pk}/", None, {**expect(ROLES, 200), "outsider": 404}),
    ("runs-cancel", "post", lambda w: f"/api/runs/{w['run'].pk}/cancel/", None, expect(["coordinator"], 200)),
    ("models-list", "get", lambda w: "/api/models/", None, expect(SCIENCE, 200)),
    ("models-detail", "get", lambda w: f"/api/models/{w['model'].pk}/", None, expect(SCIENCE, 200)),
    ("models-download", "get", lambda w: f"/api/models/{w['model'].pk}/download/", None, expect(SCIENCE, 200)),
    ("audit-list", "get", lambda w: "/api/audit/", None, expect(["administrator"], 200)),
    ("audit-export", "get", lambda w: "/api/audit/export/", None, expect(["administrator"], 200)),
]


@pytest.mark.parametrize("persona", ALL)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_endpoint_permissions(case, persona, world, personas, api):
    _, method, url, payload, expectations = case
    client = api(personas[persona])
    data = payload(world) if payload else None
    response = getattr(client, method)(url(world), data, format="json")
    assert response.status_code == expectations[persona], (persona, response.content[:300])


def test_run_metrics_take_only_the_run_token(world, personas, api):
    """The ServerApp's endpoint: no persona's token is accepted, only the run's own."""
    payload = {"seq": 1, "type": "round", "round": 1, "metrics": [{"node": "global", "name": "c_index", "value": 0.7}]}
    for persona in ALL:
        r = api(personas[persona]).post(f"/api/runs/{world['run'].pk}/events/", payload, format="json")
        assert r.status_code == 401, persona


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_anonymous_is_refused(case, world, api):
    _, method, url, payload, _ = case
    response = getattr(api(), method)(url(world), payload(world) if payload else None, format="json")
    assert response.status_code == 401


def test_node_endpoints_accept_only_node_tokens(world, api, personas):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {world['token']}")
    registered = world["node"].flower_node_id
    assert client.post("/api/nodes/heartbeat/", {"status": "ok", "flower_node_id": str(2**64 - 1)},
                       format="json").status_code == 200
    world["node"].refresh_from_db()
    assert world["node"].flower_node_id == registered  # the SuperLink's id, not what the node says
    assert world["node"].online
    # the node's token cannot act as a person
    assert client.get("/api/studies/").status_code == 403
    assert client.get("/api/audit/").status_code == 403
    # once revoked, the token is gone
    from portal.nodes.services import revoke_node

    revoke_node(personas["administrator"], world["node"])
    assert client.post("/api/nodes/heartbeat/", {}, format="json").status_code == 401
    assert not Token.objects.filter(key=world["token"]).exists()


def test_outsider_sees_only_its_organisation(world, personas, api):
    listing = api(personas["outsider"]).get("/api/nodes/").json()
    assert listing["count"] == 0
    own = api(personas["node_operator"]).get("/api/nodes/").json()
    assert {n["name"] for n in own["results"]} == {"hosp-a-node", "pending-node"}
