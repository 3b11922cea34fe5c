"""Health, schema, API tokens, the audit trail, the domain model."""
import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_health_reports_database_and_redis(api, personas):
    response = api(personas["administrator"]).get("/api/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["database"]["status"] == "ok"
    assert body["redis"]["status"] == "ok"
    assert set(body) >= {"status", "database", "redis", "superlink", "nodes"}
    assert body["nodes"] == {"approved": 0, "online": 0, "online_nodes": [], "pending": 0}


def test_health_says_degraded_when_redis_is_unreachable(api, settings, personas):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = api(personas["administrator"]).get("/api/health/")
    assert response.status_code == 503
    assert response.json()["redis"]["status"] == "error"


def test_health_counts_online_nodes(api, approved_node, personas):
    from portal.nodes.services import heartbeat

    node, _ = approved_node
    heartbeat(node, {"status": "ok"})
    nodes = api(personas["administrator"]).get("/api/health/").json()["nodes"]
    assert nodes["approved"] == 1 and nodes["online"] == 1 and nodes["online_nodes"] == [node.name]


def test_openapi_schema_and_docs(api, personas):
    schema = api().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for p in ["/api/health/", "/api/studies/", "/api/runs/", "/api/nodes/heartbeat/", "/api/datasets/"]:
        assert p in paths
    assert api(personas["clinician"]).get("/api/docs/").status_code == 200


def test_api_token_command(personas, api, capsys):
    call_command("api_token", "coordinator")
    token = capsys.readouterr().out.strip()
    assert len(token) == 40
    call_command("api_token", "coordinator")
    assert capsys.readouterr().out.strip() == token  # stable until rotated
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/me/").json()["roles"] == ["coordinator"]
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no user 'ghost'"):
        call_command("api_token", "ghost")


def test_audit_trail_is_append_only(personas):
    from portal.audit.models import AppendOnlyError, AuditEvent
    from portal.audit.services import record

    event = record(personas["administrator"], "test.action", personas["clinician"], {"k": 1})
    assert AuditEvent.objects.get(pk=event.pk).actor_name == "administrator"
    event.action = "changed"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.action"


def test_unsigned_64_bit_ids_are_kept_exactly(personas, approved_node):
    from portal.studies.models import Run, Study

    node, _ = approved_node
    big = str(2**64 - 1)
    node.flower_node_id = big
    node.save()
    study = Study.objects.create(title="t", use_case="MDS", owner=personas["coordinator"])
    run = Run.objects.create(study=study, rounds=1, created_by=personas["coordinator"], flower_run_id=big)
    node.refresh_from_db()
    run.refresh_from_db()
    assert node.flower_node_id == big and run.flower_run_id == big


def test_study_hyperparameters_are_validated(personas, api, approved_node):
    client = api(personas["coordinator"])
    bad = client.post("/api/studies/", {"title": "x", "use_case": "MDS", "model_kind": "deepsurv",
                                        "hyperparameters": {"dropout": 2, "nonsense": 1}}, format="json")
    assert bad.status_code == 400
    text = str(bad.json())
    assert "dropout" in text and "nonsense" in text
    ok = client.post("/api/studies/", {"title": "x", "use_case": "MDS", "model_kind": "savae"}, format="json")
    assert ok.status_code == 201
    assert ok.json()["hyperparameters"]["latent_dim"] == 5  # defaults filled in
    bad_ep = client.post("/api/studies/", {"title": "x", "use_case": "MDS", "endpoint": "pfs"}, format="json")
    assert bad_ep.status_code == 400 and "endpoint" in bad_ep.json()["errors"]


def test_study_refuses_datasets_without_the_features(personas, api, approved_node):
    from portal.datasets.models import Dataset

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="d", use_case="MDS", cdm_version="1.0", patient_count=10,
                                feature_schema=["age", "os_months", "os_event"], fingerprint="c" * 64)
    response = api(personas["coordinator"]).post(
        "/api/studies/", {"title": "x", "use_case": "MDS", "features": ["age", "TP53"], "datasets": [ds.pk]},
        format="json")
    assert response.status_code == 400
    assert "lacks TP53" in str(response.json()["errors"]["datasets"])


def test_dataset_announcement_versions(approved_node):
    from rest_framework.test import APIClient

    node, token = approved_node
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    payload = {"name": "mds", "version": 1, "use_case": "mds", "schema_version": "1.0", "patient_count": 100,
               "fingerprint": "d" * 64, "quality_summary": {"rejected_rows": 0}, "feature_schema": ["age"]}
    assert client.post("/api/nodes/datasets/", payload, format="json").status_code == 201
    assert client.post("/api/nodes/datasets/", payload, format="json").status_code == 200  # idempotent
    changed = {**payload, "fingerprint": "e" * 64}
    conflict = client.post("/api/nodes/datasets/", changed, format="json")
    assert conflict.status_code == 409 and "new version" in conflict.json()["detail"]
    assert client.post("/api/nodes/datasets/", {**changed, "version": 2}, format="json").status_code == 201
    from portal.datasets.models import Dataset

    assert list(Dataset.objects.filter(node=node).values_list("version", "fingerprint")) == \
        [(2, "e" * 64), (1, "d" * 64)]
    rows = client.post("/api/nodes/datasets/", {**payload, "version": 3, "rows": [[1, 2]]}, format="json")
    assert rows.status_code == 400 and "metadata only" in str(rows.json()["errors"]["rows"])
    assert not Dataset.objects.filter(version=3).exists()


def test_node_key_must_be_ec_p384(personas, api, orgs):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    response = api(personas["administrator"]).post(
        "/api/nodes/", {"name": "n1", "organisation": "hosp-a", "public_key": p256}, format="json")
    assert response.status_code == 400 and "P-384" in str(response.json())
    garbage = api(personas["administrator"]).post(
        "/api/nodes/", {"name": "n1", "organisation": "hosp-a", "public_key": "hello"}, format="json")
    assert garbage.status_code == 400 and "public key" in str(garbage.json())
