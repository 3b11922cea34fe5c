"""Malformed ids get 400 or 404, never a server error: query-parameter filters, path ids and ids
inside request bodies, over the DRF API, the pages and the websockets."""
import pytest
from channels.testing import WebsocketCommunicator

pytestmark = pytest.mark.django_db

BIG = "9" * 25  # past every database integer (2^63 - 1 has 19 digits)
HUGE = "9" * 5000  # past Python's default int() digit limit (4300)


@pytest.fixture
def admin_client(api, personas):
    client = api(personas["administrator"])
    client.raise_request_exception = False  # a 500 shows as a status, not an exception
    return client


@pytest.mark.parametrize("value", [BIG, HUGE, "abc", "-1", "0", "1.5", "１２", " 7", "0x1f"])
def test_run_study_filter_refuses_malformed_ids_with_400(admin_client, value):
    r = admin_client.get("/api/runs/", {"study": value})
    assert r.status_code == 400, (value, r.status_code)
    assert "study" in r.json()["errors"]


def test_run_study_filter_still_filters(admin_client, personas):
    from portal.studies.models import Run, Study

    a = Study.objects.create(title="a", use_case="MDS", owner=personas["coordinator"])
    b = Study.objects.create(title="b", use_case="MDS", owner=personas["coordinator"])
    Run.objects.create(study=a, rounds=1, created_by=personas["coordinator"])
    Run.objects.create(study=b, rounds=1, created_by=personas["coordinator"])
    r = admin_client.get("/api/runs/", {"study": str(a.pk)})
    assert r.status_code == 200
    body = r.json()
    rows = body["results"] if isinstance(body, dict) else body
    assert [row["study"] for row in rows] == [a.pk]
    assert admin_client.get("/api/runs/", {"study": ""}).status_code == 200  # absent = no filter


PATH_IDS = ["/api/runs/{}/", "/api/studies/{}/", "/api/studies/{}/runs/", "/api/studies/{}/approvals/",
            "/api/datasets/{}/", "/api/nodes/{}/", "/api/audit/{}/", "/api/models/{}/", "/api/cohorts/{}/",
            "/api/organisations/{}/", "/api/studies/{}/generation-runs/", "/api/studies/{}/grid-runs/",
            "/api/grid-runs/{}/", "/api/grid-runs/{}/results.csv"]
PAGE_IDS = ["/studies/{}/", "/runs/{}/", "/datasets/{}/", "/studies/{}/edit/", "/studies/{}/report/",
            "/studies/{}/compare/", "/models/{}/", "/cohorts/{}/", "/generation-runs/{}/"]


@pytest.mark.parametrize("path", PATH_IDS)
@pytest.mark.parametrize("value", [BIG, "abc"])
def test_path_ids_out_of_range_or_not_numeric_are_404(admin_client, path, value):
    r = admin_client.get(path.format(value))
    assert r.status_code in (400, 404), (path, r.status_code)


@pytest.mark.parametrize("path", PAGE_IDS)
def test_page_ids_out_of_range_are_404(client, personas, path):
    client.force_login(personas["coordinator"])
    client.raise_request_exception = False
    assert client.get(path.format(BIG)).status_code == 404


@pytest.mark.parametrize("path", ["/api/runs/{}/cancel/", "/api/runs/{}/metrics/", "/api/nodes/{}/approve/",
                                  "/api/grid-runs/{}/cancel/", "/api/studies/{}/clone/"])
def test_posts_to_huge_path_ids_are_404(admin_client, path):
    r = admin_client.post(path.format(BIG), {}, format="json")
    assert r.status_code in (400, 401, 403, 404), (path, r.status_code)


@pytest.mark.parametrize("value", [int(BIG), -1, "abc", True])
def test_ids_in_request_bodies_are_400(api, personas, approved_node, value):
    from portal.datasets.models import Dataset
    from portal.studies.models import Study

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", use_case="MDS", cdm_version="1.0", patient_count=10,
                                feature_schema=["age", "os_months", "os_event"], fingerprint="1" * 64)
    coord = api(personas["coordinator"])
    coord.raise_request_exception = False
    r = coord.post("/api/studies/", {"title": "t", "use_case": "MDS", "datasets": [value]}, format="json")
    assert r.status_code == 400 and "datasets" in r.json()["errors"], r.status_code
    study = Study.objects.create(title="a", use_case="MDS", owner=personas["coordinator"], features=["age"])
    study.datasets.add(ds)
    op = api(personas["node_operator"])
    op.raise_request_exception = False
    r = op.post(f"/api/studies/{study.pk}/approvals/", {"dataset": value, "decision": "approved"}, format="json")
    assert r.status_code == 400 and "dataset" in r.json()["errors"], r.status_code
    r = coord.post(f"/api/studies/{study.pk}/grid-runs/", {"synthetic_cohort": value}, format="json")
    assert r.status_code in (400, 409), r.status_code


@pytest.mark.parametrize("query", [{"since": "abc"}, {"until": "2020-13-45"}, {"limit": BIG, "offset": BIG},
                                   {"limit": "-5"}, {"use_case": "x" * 5000}])
def test_other_filters_never_fail_with_500(admin_client, query):
    path = "/api/datasets/" if "use_case" in query else "/api/audit/"
    r = admin_client.get(path, query)
    assert r.status_code in (200, 400), r.status_code


@pytest.mark.parametrize("value", [BIG, HUGE, "-1"])
def test_the_page_approval_form_refuses_a_malformed_dataset_id(client, personas, value):
    from portal.studies.models import Study, StudyApproval

    study = Study.objects.create(title="a", use_case="MDS", owner=personas["coordinator"])
    client.force_login(personas["node_operator"])
    client.raise_request_exception = False
    r = client.post(f"/studies/{study.pk}/decide/", {"dataset": value, "decision": "approved"})
    assert r.status_code in (302, 400, 404), r.status_code
    assert not StudyApproval.objects.exists()


def _ws_connect(path: str, user=None) -> tuple[bool, int | None]:
    """Open a websocket through the real ASGI application (a thread of its own, like
    tests/portal/test_runs_api.py); (accepted?, close code)."""
    import asyncio
    import threading

    from portal.asgi import application

    async def scenario():
        comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1")])
        if user is not None:
            comm.scope["user"] = user
        try:
            return await comm.connect(timeout=5)
        finally:
            await comm.disconnect()

    out: list = []

    def run():
        try:
            out.append(asyncio.run(scenario()))
        except BaseException as exc:  # re-raised in the test's thread
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert out, "websocket scenario did not finish"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/runs/abc/", f"/ws/runs/{BIG}/", "/ws/runs/-1/", "/ws/runs/1/extra/",
                                  "/ws/grid-runs/abc/", f"/ws/grid-runs/{BIG}/", "/ws/nothing-here/"])
def test_malformed_websocket_ids_close_cleanly(personas, path):
    for user in (None, personas["administrator"]):
        connected, code = _ws_connect(path, user)
        assert connected is False and code in (4403, 4404), (path, code)
