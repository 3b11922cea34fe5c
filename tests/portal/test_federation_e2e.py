"""The spine with real processes: a SuperLink and three SuperNodes (TLS + node authentication),
the portal (live server), a real Celery worker on the real Redis broker, MLflow. A coordinator
starts a 2-round study through the API; metrics, live messages and the registered model follow.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.portal.federation_world import portal_federation, wait_run as _wait

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NODES = ("hosp-a", "hosp-b", "hosp-c")


@pytest.fixture
def federation(tmp_path, settings, live_server, personas, orgs, django_db_blocker):
    """Real federation + portal rows (approved nodes, announced datasets, approved study)."""
    # every hospital's held-out split has at least the default small-cell count (10) of patients and
    # events, so each reports its own C-index
    with portal_federation(tmp_path, settings, live_server, personas, django_db_blocker, nodes=NODES,
                           fractions=(0.5, 0.3, 0.2), n_patients=900, seed=3, round_timeout_s=120,
                           concurrency=2,
                           study={"title": "E2E", "feature_groups": ["clinical", "cytogenetic", "genomic"],
                                  "min_nodes": 2, "rounds": 50, "hyperparameters": {"local_epochs": 1, "hidden": [16]}}) as world:
        yield world


class Listener:
    """What a browser watching the run receives: a member of the run's group on the real channel
    layer (its own layer instance and event loop, in a thread)."""

    def __init__(self, run_id: int):
        import asyncio
        import threading

        from channels.layers import channel_layers

        from portal.core.live import run_group

        self.messages: list[dict] = []
        self.layer = channel_layers.make_backend("default")
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            channel = await self.layer.new_channel()
            await self.layer.group_add(run_group(run_id), channel)
            ready.set()
            while True:
                self.messages.append(await self.layer.receive(channel))

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        assert ready.wait(10)


def test_two_round_study_through_the_api(federation, api, personas):
    coord = api(personas["coordinator"])
    started = coord.post(f"/api/studies/{federation['study'].pk}/runs/", {"rounds": 2}, format="json")
    assert started.status_code == 201, started.json()
    run_id = started.json()["id"]
    listener = Listener(run_id)
    body = _wait(api(personas["clinician"]), run_id,
                 lambda b: b["status"] not in ("queued", "starting", "running", "concluding"))
    assert body["status"] == "finished", body["error"]
    assert body["flower_run_id"].isdigit()
    assert body["missed"] == [], body["missed"]  # every hospital answered every phase
    cidx = {(m["round"], m["node"]): m["value"] for m in body["metrics"] if m["name"] == "c_index"}
    for r in (1, 2):
        for node in (*NODES, "global"):
            assert 0.0 <= cidx.get((r, node), -1) <= 1.0, (
                r, node, {m["name"]: m["value"] for m in body["metrics"] if (m["round"], m["node"]) == (r, node)})
    # the global value is the patient-weighted mean of the nodes' values
    n_hold = {m["node"]: m["value"] for m in body["metrics"] if m["name"] == "n_holdout" and m["round"] == 2}
    weighted = sum(cidx[(2, n)] * n_hold[n] for n in NODES) / sum(n_hold[n] for n in NODES)
    assert abs(weighted - cidx[(2, "global")]) < 1e-9
    # live messages: one per round with its metrics, and the final status
    time.sleep(1)
    seen = [{"event": m["event"], "data": m["data"]} for m in listener.messages]
    rounds = sorted(m["data"]["round"] for m in seen if m["event"] == "round")
    assert rounds == [1, 2]
    # the comparison phase: each hospital's own model and IPSS-M / IPSS-R on the same held-out rows
    last = {(m["node"], m["name"]): m["value"] for m in body["metrics"] if m["round"] == 2}
    for node in (*NODES, "global"):
        for name in ("isolated_c_index", "ipss_m_c_index", "ipss_r_c_index"):
            assert 0.0 <= last[(node, name)] <= 1.0, (node, name)
    assert any(m["event"] == "comparison" and m["data"]["round"] == 2 for m in seen)
    statuses = [m["data"]["status"] for m in seen if m["event"] == "status"]
    assert statuses.index("concluding") < statuses.index("finished"), statuses  # the model is stored first
    # the registered model loads back from MLflow and predicts
    mv = body["model_version"]
    assert mv and mv["version"] == "1"
    import mlflow

    from fl_engine.cohort import generate_mds_cohort

    model = mlflow.pyfunc.load_model(f"models:/{mv['registered_model_name']}/{mv['version']}")
    pred = model.predict(generate_mds_cohort(n=50, seed=11))
    assert pred.shape[0] == 50 and np.isfinite(pred["risk"]).all()
    assert pred["risk"].nunique() > 40  # a trained model separates patients
    # survival curves from the federated Breslow baseline
    assert ((pred["surv_12m"] >= pred["surv_60m"]) & (pred["surv_60m"] >= 0) & (pred["surv_12m"] <= 1)).all()
    assert pred["surv_60m"].std() > 0


def test_cancel_a_running_study(federation, api, personas):
    from portal.studies import flower_adapter

    coord = api(personas["coordinator"])
    run_id = coord.post(f"/api/studies/{federation['study'].pk}/runs/", {"rounds": 50},
                        format="json").json()["id"]
    body = _wait(coord, run_id, lambda b: b["rounds_completed"] >= 1 or b["status"] in ("failed", "finished"))
    assert body["status"] == "running", body["error"]
    cancelled = coord.post(f"/api/runs/{run_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = flower_adapter.run_status(body["flower_run_id"])
        if state["finished"]:
            break
        time.sleep(1)
    assert state["status"] == "finished:stopped"
    final = coord.get(f"/api/runs/{run_id}/").json()
    assert final["status"] == "cancelled" and final["rounds_completed"] < 50


def test_syncing_a_registered_key_again_is_harmless(federation, caplog):
    """Approval's Celery task and the demo's direct call may both register a node's key: the
    second call finds the key at the SuperLink and leaves the node as it was, without a warning."""
    from portal.nodes.models import WorkerNode
    from portal.studies import flower_adapter

    node = WorkerNode.objects.get(name=NODES[0])
    before = node.flower_node_id
    with caplog.at_level("INFO", logger="portal.studies.flower_adapter"):
        flower_adapter.sync_node_key(node.pk)
    node.refresh_from_db()
    assert node.flower_node_id == before
    assert "already registered" in caplog.text and "failed" not in caplog.text, caplog.text
