"""Run lifecycle through the API, without Flower: start refusals, approvals, metrics ingestion
with the run token, cancellation, and live messages over the real channel layer."""
import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(personas, approved_node):
    from portal.datasets.models import Dataset
    from portal.studies.models import Study

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=300, feature_schema=["age", "hb", "os_months", "os_event"],
                                fingerprint="f" * 64)
    s = Study.objects.create(title="Run study", use_case="MDS", owner=personas["coordinator"], min_nodes=1,
                             features=["age", "hb"], hyperparameters={"local_epochs": 1})
    s.datasets.add(ds)
    return s


def test_run_needs_node_operator_approval(study, personas, api, django_capture_on_commit_callbacks):
    coord = api(personas["coordinator"])
    refused = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 2}, format="json")
    assert refused.status_code == 409 and "approval" in refused.json()["detail"]
    ds = study.datasets.get()
    # the outsider (another hospital) cannot approve on hospital A's data
    other = api(personas["outsider"]).post(f"/api/studies/{study.pk}/approvals/",
                                           {"dataset": ds.pk, "decision": "approved"}, format="json")
    assert other.status_code in (403, 404)
    ok = api(personas["node_operator"]).post(f"/api/studies/{study.pk}/approvals/",
                                             {"dataset": ds.pk, "decision": "approved", "comment": "IRB 42"},
                                             format="json")
    assert ok.status_code == 200
    assert ok.json()[0]["decided_by"] == "node_operator" and ok.json()[0]["comment"] == "IRB 42"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        started = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 2}, format="json")
    assert started.status_code == 201, started.json()
    body = started.json()
    assert body["status"] == "queued" and body["rounds"] == 2
    assert body["config"]["datasets"][0]["fingerprint"] == "f" * 64  # version pinned
    assert len(callbacks) == 1  # the Celery task is queued only after commit
    assert api(personas["clinician"]).post(f"/api/studies/{study.pk}/runs/", {}, format="json").status_code == 403


def test_the_comparison_phase_is_switched_per_run(study, personas, api, django_capture_on_commit_callbacks):
    from portal.audit.models import AuditEvent
    from portal.studies import services
    from portal.studies.models import Run

    services.decide_approval(personas["node_operator"], study, study.datasets.get(), "approved")
    coord = api(personas["coordinator"])
    with django_capture_on_commit_callbacks(execute=False):
        on = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 1}, format="json")
        off = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 1, "comparison": False}, format="json")
        bad = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 1, "comparison": "perhaps"}, format="json")
    assert on.status_code == off.status_code == 201 and bad.status_code == 400, bad.json()
    assert "comparison" in bad.json()["errors"]
    run_on, run_off = Run.objects.get(pk=on.json()["id"]), Run.objects.get(pk=off.json()["id"])
    assert services.flower_run_config(run_on)["analysis"]["comparison"] is True
    assert services.flower_run_config(run_off)["analysis"]["comparison"] is False
    event = AuditEvent.objects.filter(action="run.start", object_id=str(run_off.pk)).get()
    assert event.detail["comparison"] is False
    legacy = Run.objects.get(pk=run_off.pk)  # a run queued before the switch existed: on
    legacy.config.pop("comparison")
    assert services.flower_run_config(legacy)["analysis"]["comparison"] is True


def _approved_run(study, personas):
    from portal.studies import services

    services.decide_approval(personas["node_operator"], study, study.datasets.get(), "approved")
    return services.start_run(personas["coordinator"], study, rounds=2)


def test_events_need_the_run_token_and_count_once(study, personas, api):
    from portal.studies import services

    run = _approved_run(study, personas)
    token = services.run_token(run)
    payload = {"run": run.pk, "seq": 3, "type": "round", "round": 1, "metrics": [
        {"node": "hosp-a-node", "name": "c_index", "value": 0.71},
        {"node": "global", "name": "c_index", "value": 0.71},
        {"node": "global", "name": "loss", "value": None}]}
    client = api()
    assert client.post(f"/api/runs/{run.pk}/events/", payload, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert client.post(f"/api/runs/{run.pk}/events/", payload, format="json").status_code == 401
    # another run's token does not open this run
    other = services.start_run(personas["coordinator"], study, rounds=2)
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.run_token(other)}")
    assert client.post(f"/api/runs/{run.pk}/events/", payload, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    r = client.post(f"/api/runs/{run.pk}/events/", payload, format="json")
    assert r.status_code == 201 and r.json()["stored"] is True
    again = client.post(f"/api/runs/{run.pk}/events/", payload, format="json")
    assert again.status_code == 200 and again.json()["stored"] is False  # the same event twice
    bad = client.post(f"/api/runs/{run.pk}/events/", {**payload, "seq": "x"}, format="json")
    assert bad.status_code == 400 and "seq" in bad.json()["detail"]
    detail = api(personas["clinician"]).get(f"/api/runs/{run.pk}/").json()
    assert detail["rounds_completed"] == 1
    assert {(m["node"], m["value"]) for m in detail["metrics"]} == {("hosp-a-node", 0.71), ("global", 0.71)}


def test_cancel_a_queued_run(study, personas, api):
    run = _approved_run(study, personas)
    assert api(personas["clinician"]).post(f"/api/runs/{run.pk}/cancel/").status_code == 403
    r = api(personas["coordinator"]).post(f"/api/runs/{run.pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = api(personas["coordinator"]).post(f"/api/runs/{run.pk}/cancel/")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_two_runs_keep_their_metrics_apart(study, personas):
    from portal.studies import services

    run1 = _approved_run(study, personas)
    run2 = services.start_run(personas["coordinator"], study, rounds=2)
    services.ingest_round(run1, 1, [{"node": "global", "name": "c_index", "value": 0.6}])
    services.ingest_round(run2, 1, [{"node": "global", "name": "c_index", "value": 0.8}])
    assert list(run1.metrics.values_list("value", flat=True)) == [0.6]
    assert list(run2.metrics.values_list("value", flat=True)) == [0.8]


def test_run_page_renders_history(study, personas, client):
    from portal.studies import services

    run = _approved_run(study, personas)
    services.ingest_round(run, 1, [{"node": "global", "name": "c_index", "value": 0.66},
                                   {"node": "hosp-a-node", "name": "c_index", "value": 0.65}])
    client.force_login(personas["clinician"])
    page = client.get(f"/runs/{run.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "plotly.min.js" in html and '"done": 1' in html and "0.66" in html
    assert "Cancel this run" not in html  # clinicians cannot cancel
    client.force_login(personas["norole"])
    assert client.get(f"/runs/{run.pk}/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_websocket_forwards_round_events_to_authorised_viewers(personas, approved_node):
    """Through the real channel layer (Redis): a clinician's socket receives the round; a user
    without a role is refused."""
    from channels.testing import WebsocketCommunicator

    from portal.asgi import application
    from portal.datasets.models import Dataset
    from portal.studies import services
    from portal.studies.models import Study

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", use_case="MDS", cdm_version="1.0", patient_count=10,
                                feature_schema=["age", "os_months", "os_event"], fingerprint="1" * 64)
    study = Study.objects.create(title="ws", use_case="MDS", owner=personas["coordinator"], min_nodes=1,
                                 features=["age"])
    study.datasets.add(ds)
    run = _approved_run(study, personas)

    async def scenario():
        from channels.db import database_sync_to_async

        ok = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[(b"origin", b"http://127.0.0.1")])
        ok.scope["user"] = personas["clinician"]
        connected, _ = await ok.connect()
        assert connected
        await database_sync_to_async(services.ingest_round)(
            run, 1, [{"node": "global", "name": "c_index", "value": 0.7}])
        msg = await ok.receive_json_from(timeout=5)
        assert msg["event"] in ("round", "status")
        while msg["event"] != "round":
            msg = await ok.receive_json_from(timeout=5)
        assert msg["data"]["round"] == 1 and msg["data"]["metrics"][0]["value"] == 0.7
        await ok.disconnect()
        denied = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[(b"origin", b"http://127.0.0.1")])
        denied.scope["user"] = personas["norole"]
        connected, code = await denied.connect()
        assert not connected

    # In a thread of its own: a browser test earlier in the session may leave an event loop
    # running in this one (Playwright's sync API).
    import asyncio
    import threading

    errors: list = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: asyncio.run(scenario())))
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "websocket scenario did not finish"
    if errors:
        raise errors[0]


def _capture(errors: list, fn) -> None:
    try:
        fn()
    except BaseException as exc:  # re-raised in the test's thread
        errors.append(exc)
