"""The manager receives each node's privacy-ledger summary and local policy limits in its heartbeat:
validated (a bad report is a 400 naming the field and changes nothing stored), stored on the
node, and shown on the run page and the node page."""
from __future__ import annotations

import copy
import json

import pytest

from fl_engine.cohort import generate_mds_cohort
from fl_engine.federation.config import parse_run_config
from fl_engine.node.budget import charge_run
from fl_engine.node.datasets import register_table
from fl_engine.node.heartbeat import heartbeat_payload
from portal.audit.models import AuditEvent
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import local_limits_for, recorded_run_spend
from portal.studies.models import Run, Study

CHARGE = {"run": "41", "study": "3", "epsilon": 5.93, "delta": 1e-6, "time": "2026-12-04T10:00:00+00:00", "dp": True}
SPEND = {"dataset": "mds", "budget_epsilon": 10.0, "budget_delta": 1e-5, "budget_source": "default",
         "spent_epsilon": 5.93, "spent_delta": 1e-6, "dp_runs": 1, "runs": 2,
         "charges": [CHARGE, {"run": "42", "study": "3", "epsilon": None, "delta": None,
                              "time": "2026-12-04T11:00:00+00:00", "dp": False}]}
LIMITS = {"*": {"min_cell_count": 10}, "mds": {"require_dp": True, "purposes": ["training", "analysis"]}}


def _beat(api, token, **extra):
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.post("/api/nodes/heartbeat/", {"name": "hosp-a-node", "status": "online", **extra}, format="json")


@pytest.mark.django_db
def test_the_heartbeat_stores_the_ledger_summary_and_the_limits(api, approved_node):
    node, token = approved_node
    r = _beat(api, token, privacy={"datasets": [SPEND]}, policy_limits=LIMITS)
    assert r.status_code == 200, r.content
    node.refresh_from_db()
    [row] = node.privacy_spend["datasets"]
    assert row["spent_epsilon"] == 5.93 and row["charges"][1]["epsilon"] is None and node.privacy_reported_at
    assert node.policy_limits == {"*": {"min_cell_count": 10},
                                  "mds": {"require_dp": True, "purposes": ["analysis", "training"]}}
    assert "privacy" not in node.last_report and "policy_limits" not in node.last_report
    assert local_limits_for(node, "mds") == {"min_cell_count": 10, "require_dp": True,
                                             "purposes": ["analysis", "training"]}
    [event] = AuditEvent.objects.filter(action="node.policy_limits")
    assert event.detail["before"] == {} and event.detail["after"]["*"] == {"min_cell_count": 10}
    # an older node's heartbeat (neither part) keeps what was stored; the same limits again audit nothing
    assert _beat(api, token).status_code == 200
    assert _beat(api, token, policy_limits=LIMITS).status_code == 200
    node.refresh_from_db()
    assert node.privacy_spend["datasets"][0]["runs"] == 2 and node.policy_limits["*"] == {"min_cell_count": 10}
    assert AuditEvent.objects.filter(action="node.policy_limits").count() == 1
    assert _beat(api, token, policy_limits={}).status_code == 200  # the operator removed the file
    node.refresh_from_db()
    assert node.policy_limits == {} and local_limits_for(node, "mds") == {}


def _with(path, value):
    body = {"privacy": {"datasets": [copy.deepcopy(SPEND)]}, "policy_limits": copy.deepcopy(LIMITS)}
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("path, value, named", [
    (("privacy", "datasets", 0, "charges", 0, "epsilon"), -1, "epsilon"),
    (("privacy", "datasets", 0, "charges", 0, "epsilon"), None, "epsilon"),  # dp true without epsilon
    (("privacy", "datasets", 0, "charges", 1, "epsilon"), 0.0, "epsilon"),  # no DP is never epsilon 0
    (("privacy", "datasets", 0, "charges", 0, "patient_id"), "P-001", "patient_id"),
    (("privacy", "datasets", 0, "rows"), [[1, 2]], "rows"),
    (("privacy", "datasets", 0, "spent_epsilon"), "lots", "spent_epsilon"),
    (("privacy", "datasets", 0, "budget_source"), "manager", "budget_source"),
    (("privacy", "datasets", 0, "charges", 0, "time"), "yesterday", "time"),
    (("privacy", "datasets"), "all", "datasets"),
    (("policy_limits", "mds", "min_cell_count"), "many", "min_cell_count"),
    (("policy_limits", "mds", "rows"), 1, "rows"),
    (("policy_limits",), ["mds"], "policy_limits"),
])
def test_a_bad_report_is_refused_naming_the_field_and_nothing_stored_changes(api, approved_node, path, value,
                                                                             named):
    node, token = approved_node
    assert _beat(api, token, privacy={"datasets": [SPEND]}, policy_limits=LIMITS).status_code == 200
    node.refresh_from_db()
    before = (node.privacy_spend, node.policy_limits, node.last_heartbeat, node.last_report)
    r = _beat(api, token, **_with(path, value))
    assert r.status_code == 400 and named in json.dumps(r.json()), r.content
    assert path[0] in r.json()["errors"]
    node.refresh_from_db()
    assert (node.privacy_spend, node.policy_limits, node.last_heartbeat, node.last_report) == before


@pytest.mark.django_db
def test_non_finite_numbers_are_not_json_and_are_refused(api, approved_node):
    node, token = approved_node
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    body = json.dumps({"privacy": {"datasets": [SPEND]}}).replace("5.93,", "Infinity,", 1)
    r = client.post("/api/nodes/heartbeat/", body, content_type="application/json")
    assert r.status_code == 400
    node.refresh_from_db()
    assert node.privacy_spend == {}


@pytest.mark.django_db
def test_what_a_real_node_sends_is_accepted_and_shown_on_the_run_page(api, approved_node, mds_dataset, personas,
                                                                       tmp_path, client):
    node, token = approved_node
    data = tmp_path / "data"
    df = generate_mds_cohort(80, seed=2)
    register_table(data, "mds", df[df["age"].notna()].reset_index(drop=True), "MDS")
    study = Study.objects.create(title="S", use_case="MDS", endpoint="os", owner=personas["coordinator"],
                                 model_kind="deepsurv", features=["age", "hb"],
                                 privacy={"dp_enabled": True, "dp_noise_multiplier": 2.0})
    study.datasets.set([mds_dataset])
    run = Run.objects.create(study=study, rounds=5, created_by=personas["coordinator"],
                             config={"privacy": study.privacy, "datasets": [
                                 {"node": node.name, "name": "mds", "version": 1, "fingerprint": "f" * 64}]})
    cfg = parse_run_config({"dataset": "mds", "portal_run_id": str(run.pk), "study_id": str(study.pk),
                            "num_rounds": 5, "dp_enabled": True, "dp_noise_multiplier": 2.0}, strict=False)
    line = charge_run({"data-dir": str(data)}, cfg, node.name, {"name": "mds", "fingerprint": "f" * 64})
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps(LIMITS))
    payload = heartbeat_payload(node.name, data, "online", node_cfg={"policy-file": str(limits)})
    r = _beat(api, token, **payload)
    assert r.status_code == 200, r.content
    [rec] = recorded_run_spend(run)
    assert rec["node"] == node.name and rec["charge"]["epsilon"] == pytest.approx(line["epsilon"])
    client.force_login(personas["coordinator"])
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="run-recorded-epsilon"' in page and f"{line['epsilon']:.2f}" in page and node.name in page
    nodes_page = client.get("/nodes/").content.decode()
    assert "spent epsilon" in nodes_page and f"{line['epsilon']:.2f}" in nodes_page


@pytest.mark.django_db
def test_a_dp_run_the_reported_ledger_cannot_afford_is_refused_at_start_with_the_figures(api, approved_node,
                                                                                         mds_dataset, personas):
    from fl_engine.federation.privacy import DEFAULT_RUN_DELTA, dp_fedavg_epsilon
    from portal.studies import services
    from portal.studies.models import StudyApproval

    node, token = approved_node
    study = Study.objects.create(title="DP", use_case="MDS", endpoint="os", owner=personas["coordinator"],
                                 model_kind="deepsurv", features=["age", "hb"], rounds=5, min_nodes=1,
                                 privacy={"dp_enabled": True, "dp_noise_multiplier": 1.0, "dp_clip_norm": 1.0})
    study.datasets.set([mds_dataset])
    StudyApproval.objects.create(study=study, dataset=mds_dataset, decision="approved",
                                 decided_by=personas["node_operator"], settings_hash=services.settings_hash(study))
    eps = dp_fedavg_epsilon(1.0, 5, DEFAULT_RUN_DELTA)
    # the node reports a budget that this run's epsilon would overspend
    spend = {**SPEND, "budget_epsilon": 15.0, "spent_epsilon": 15.0 - eps * 0.6}  # 2 rounds still fit
    assert _beat(api, token, privacy={"datasets": [spend]}).status_code == 200
    with pytest.raises(services.RunRefused) as refused:
        services.start_run(personas["coordinator"], study, comparison=False)
    why = str(refused.value)
    assert "privacy budget is epsilon 15" in why and f"would add epsilon {eps:.3g}" in why
    assert "noise multiplier" in why and not Run.objects.filter(study=study).exists()
    # fewer rounds fit the budget; a node that reported nothing is left to the node's own check
    assert services.start_run(personas["coordinator"], study, rounds=2, comparison=False).rounds == 2
    WorkerNode.objects.filter(pk=node.pk).update(privacy_spend={})
    assert services.start_run(personas["coordinator"], study, comparison=False).rounds == 5
