"""Participation is enforced twice, with real processes: the ServerApp messages only the run's
participants, and each worker node checks its own approvals with the portal before it touches
data. A fourth hospital, approved on the network but outside the study, is connected throughout
and never receives a message; a hospital whose approval is withdrawn mid-run stops at the next
round, and its refusal is audited."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.portal.federation_world import portal_federation, wait_run as _wait

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STUDY = ("hosp-a", "hosp-b", "hosp-c")
OUTSIDER = "hosp-d"


@pytest.fixture
def federation(tmp_path, settings, live_server, personas, orgs, django_db_blocker):
    with portal_federation(tmp_path, settings, live_server, personas, django_db_blocker, nodes=STUDY,
                           extra_nodes=(OUTSIDER,), fractions=(0.4, 0.3, 0.3), n_patients=900, seed=5,
                           round_timeout_s=120, concurrency=2,
                           study={"title": "Participation", "feature_groups": ["clinical", "cytogenetic"],
                                  "min_nodes": 2, "rounds": 12,
                                  "hyperparameters": {"local_epochs": 1, "hidden": [8]}}) as world:
        world["root"] = tmp_path / "fed" / "nodes"
        yield world


def _received(root: Path, node: str) -> list[str]:
    """Message types node `node`'s SuperNode received, from its own log."""
    text = (root / node / "supernode.log").read_text(errors="replace")
    return re.findall(r"Receiving: (\S+) message", text)


def test_a_connected_hospital_outside_the_study_never_gets_a_message(federation, api, personas):
    from fl_engine.deploy import control

    fed = federation["fed"]
    online = {n["node-id"] for n in control.list_nodes(fed.address, **fed.conn_kwargs()) if n["status"] == "online"}
    assert fed.node_ids[OUTSIDER] in online  # connected, approved, holding the same dataset name
    coord = api(personas["coordinator"])
    started = coord.post(f"/api/studies/{federation['study'].pk}/runs/", {"rounds": 2}, format="json")
    assert started.status_code == 201, started.json()
    assert [p["node"] for p in started.json()["config"]["participants"]] == list(STUDY)
    body = _wait(coord, started.json()["id"], lambda b: b["status"] in ("finished", "failed", "cancelled"))
    assert body["status"] == "finished", body["error"]
    trained = {m["node"] for m in body["metrics"] if m["name"] == "n_train"}
    assert trained == set(STUDY)
    assert _received(federation["root"], OUTSIDER) == []
    for node in STUDY:
        assert "train" in _received(federation["root"], node), node


def test_a_withdrawn_approval_stops_that_hospital_at_the_next_round(federation, api, personas):
    from portal.audit.models import AuditEvent
    from portal.studies import services

    study = federation["study"]
    coord = api(personas["coordinator"])
    run_id = coord.post(f"/api/studies/{study.pk}/runs/", {"rounds": 12}, format="json").json()["id"]
    body = _wait(coord, run_id, lambda b: b["rounds_completed"] >= 1 or b["status"] in ("failed", "finished"))
    assert body["status"] == "running", body["error"]
    withdrawn_at = body["rounds_completed"]
    ds = study.datasets.get(node__name="hosp-c")
    services.decide_approval(personas["node_operator"], study, ds, "rejected", "withdrawn for the test")
    body = _wait(coord, run_id, lambda b: b["status"] in ("finished", "failed", "cancelled"), timeout=600)
    assert body["status"] == "finished", body["error"]  # a and b go on: min_nodes=2
    rounds_c = sorted({m["round"] for m in body["metrics"] if m["node"] == "hosp-c" and m["name"] == "n_train"})
    rounds_a = sorted({m["round"] for m in body["metrics"] if m["node"] == "hosp-a" and m["name"] == "n_train"})
    assert rounds_a == list(range(1, 13))
    # hosp-c trained at most up to the round after the withdrawal (its cached list lives 1 s)
    assert rounds_c and max(rounds_c) <= withdrawn_at + 2, (withdrawn_at, rounds_c)
    refusals = AuditEvent.objects.filter(action="node.run_refused", object_repr__startswith="hosp-c")
    assert refusals.exists()
    assert "no approval of study" in refusals.first().detail["reason"]
