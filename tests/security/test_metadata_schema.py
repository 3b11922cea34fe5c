"""Dataset metadata has a strict schema at the manager: a node announces figures about its
table (counts, completeness, ranges), never rows; anything row-shaped is refused with 400 naming
the field, audited, and nothing is stored."""
import pytest

pytestmark = pytest.mark.django_db

ROWS = [{"patient_id": f"P{i:03d}", "age": 60 + i, "hb": 9.5, "os_months": 12.0 + i} for i in range(30)]


@pytest.fixture
def node_client(approved_node):
    from rest_framework.test import APIClient

    node, token = approved_node
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return node, client


def _announce(**over):
    return {"name": "mds", "version": 1, "use_case": "MDS", "schema_version": "1.0", "patient_count": 120,
            "fingerprint": "a" * 64, "feature_schema": ["age", "hb", "os_months", "os_event"],
            "quality_summary": {"patients": 120, "rejected_rows": 2, "completeness_mean": 0.97,
                                "columns_below_50pct": [], "fhir_valid": True,
                                "columns": {"hb": {"completeness": 0.98, "missing": 2, "range": [4.1, 16.8],
                                                   "kind": "numeric", "unit": "g/dL"},
                                            "age": {"completeness": 1.0, "min": 18, "max": 94}}},
            **over}


def _refusals():
    from portal.audit.models import AuditEvent

    return list(AuditEvent.objects.filter(action="dataset.metadata_refused"))


def test_a_real_quality_summary_is_stored(node_client):
    from portal.datasets.models import Dataset

    _, client = node_client
    r = client.post("/api/nodes/datasets/", _announce(), format="json")
    assert r.status_code == 201, r.json()
    stored = Dataset.objects.get().quality_report
    assert stored["columns"]["hb"]["range"] == [4.1, 16.8] and stored["patients"] == 120
    assert not _refusals()


def test_the_etl_summary_passes_the_schema(tmp_path):
    """What etl.quality.quality_summary really produces is accepted (the schema is not a wall
    the node's own ETL hits)."""
    from etl.quality import quality_summary
    from portal.datasets.metadata import validate_quality_summary

    summary = quality_summary({"summary": {"patients": 312, "rejected_patients": 1, "rejected_rows": 3,
                                           "dropped_rows": 0, "duplicates": 0, "completeness_mean": 0.93,
                                           "columns_below_50pct": ["tp53_vaf"], "unit_conversions": 12,
                                           "out_of_range": 2, "fhir_valid": True}})
    assert validate_quality_summary(summary) == summary


@pytest.mark.parametrize("summary,field", [
    ({"rows": ROWS}, "quality_summary.rows"),
    ({"columns": {"hb": {"completeness": 0.9, "values": [9.1, 10.2, 11.5, 8.7]}}}, "quality_summary.columns.hb.values"),
    ({"patient_id": "P001", "age": 63}, "quality_summary.patient_id"),
    ({"columns_below_50pct": [{"patient_id": "P001"}]}, "quality_summary.columns_below_50pct"),
    ({"hb": [9.1, 10.2, 11.5, 8.7, 12.0]}, "quality_summary.hb"),
])
def test_row_shaped_summaries_are_refused_and_audited(node_client, summary, field):
    from portal.datasets.models import Dataset

    node, client = node_client
    r = client.post("/api/nodes/datasets/", _announce(quality_summary=summary), format="json")
    assert r.status_code == 400, r.json()
    assert field in r.json()["detail"] and "quality_summary" in r.json()["errors"]
    assert not Dataset.objects.exists()
    [event] = _refusals()
    assert event.object_id == str(node.pk) and event.detail["row_shaped"] is True
    assert "quality_summary" in event.detail["fields"]
    assert "P001" not in str(event.detail) and "9.1" not in str(event.detail)  # no refused values kept


@pytest.mark.parametrize("summary,field", [
    ({"columns": {"hb": {"completeness": 1.5}}}, "columns.hb.completeness"),
    ({"columns": {"hb": {"completeness": -0.1}}}, "columns.hb.completeness"),
    ({"columns": {"hb": {"range": [20, 3]}}}, "columns.hb"),
    ({"columns": {"hb": {"range": [1, "x"]}}}, "columns.hb.range"),
    ({"columns": {f"c{i}": {"completeness": 1.0} for i in range(501)}}, "columns"),
    ({"columns": {"x" * 121: {"completeness": 1.0}}}, "columns"),
    ({"patients": 10**12}, "patients"),
    ({"patients": True}, "patients"),
    ({"free_text": "anything"}, "free_text"),
    ({"columns": {"hb": {"completeness": 0.5, "notes": {"a": {"b": {"c": 1}}}}}}, "columns.hb"),
])
def test_off_schema_summaries_are_refused_naming_the_field(node_client, summary, field):
    _, client = node_client
    r = client.post("/api/nodes/datasets/", _announce(quality_summary=summary), format="json")
    assert r.status_code == 400, r.json()
    assert f"quality_summary.{field}" in r.json()["detail"]
    assert len(_refusals()) == 1


@pytest.mark.parametrize("over,field", [
    ({"patient_count": 10**12}, "patient_count"), ({"patient_count": -1}, "patient_count"),
    ({"version": 2**40}, "version"), ({"version": 0}, "version"),
    ({"name": "n" * 81}, "name"), ({"fingerprint": "a" * 65}, "fingerprint"),
    ({"fingerprint": "not-hex" + "a" * 57}, "fingerprint"),
    ({"feature_schema": [f"f{i}" for i in range(5001)]}, "feature_schema"),
    ({"feature_schema": ["x" * 121]}, "feature_schema"),
    ({"rows": ROWS}, "rows"),
])
def test_announcement_bounds(node_client, over, field):
    from portal.datasets.models import Dataset

    _, client = node_client
    r = client.post("/api/nodes/datasets/", _announce(**over), format="json")
    assert r.status_code == 400 and field in r.json()["errors"], r.json()
    assert not Dataset.objects.exists()
    [event] = _refusals()
    assert event.detail["row_shaped"] is (field == "rows")


@pytest.mark.parametrize("entry,field", [
    ({"name": "mds", "patient_count": 10**12}, "patient_count"),
    ({"name": "mds", "version": 2**40}, "version"),
    ({"name": "mds", "fingerprint": "zz"}, "fingerprint"),
    ({"name": "mds", "rows": ROWS}, "rows"),
    ({"name": "n" * 500}, "name"),
])
def test_heartbeat_dataset_entries_are_bounded(node_client, entry, field):
    _, client = node_client
    r = client.post("/api/nodes/heartbeat/", {"status": "online", "datasets": [entry]}, format="json")
    assert r.status_code == 400, r.json()
    assert field in str(r.json()["errors"]["datasets"])


def test_heartbeat_with_real_dataset_entries_passes(node_client):
    _, client = node_client
    entry = {"name": "mds", "version": 3, "use_case": "MDS", "patient_count": 120, "fingerprint": "b" * 64}
    r = client.post("/api/nodes/heartbeat/", {"status": "online", "datasets": [entry]}, format="json")
    assert r.status_code == 200, r.json()


@pytest.mark.parametrize("name", ["global", "GLOBAL", "pooled", "superlink"])
def test_reserved_node_names_are_refused(api, personas, p384_public_key, name):
    from portal.nodes.models import WorkerNode

    r = api(personas["administrator"]).post(
        "/api/nodes/", {"name": name, "organisation": "hosp-a", "public_key": p384_public_key}, format="json")
    assert r.status_code == 400 and "reserved" in str(r.json()["errors"]["name"])
    assert not WorkerNode.objects.filter(name__iexact=name).exists()


def test_an_ordinary_node_name_is_accepted(api, personas, p384_public_key):
    r = api(personas["administrator"]).post(
        "/api/nodes/", {"name": "global-hospital-1", "organisation": "hosp-a", "public_key": p384_public_key},
        format="json")
    assert r.status_code == 201, r.json()
