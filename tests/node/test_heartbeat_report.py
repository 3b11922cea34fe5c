"""What a node's heartbeat tells the manager of its privacy ledger and of its operator's local
policy limits: aggregates and limits only, from the real ledger the ClientApp writes."""
from __future__ import annotations

import json

import pytest
from flwr.supercore.task_identity import TaskIdentity

from fl_engine.federation.privacy import dp_fedavg_epsilon
from fl_engine.node.budget import home_ledger_dir, ledger_dir, set_budget
from fl_engine.node.heartbeat import heartbeat_payload
from tests.node.test_privacy_budget import _ask, node, table  # noqa: F401  (fixtures)

CHARGE_KEYS = {"run", "study", "epsilon", "delta", "time", "dp"}


@pytest.fixture(autouse=True)
def _flower_task():
    old = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 99, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = old


def test_the_heartbeat_carries_the_ledger_summary_and_the_last_charges(node):  # noqa: F811
    set_budget(ledger_dir(node), "mds", 30.0, 1e-5)
    _ask(node, run="1", dp_enabled=True, dp_noise_multiplier=2.0)
    _ask(node, run="2", task="synthesis", generator="ctgan")
    payload = heartbeat_payload("H1", node["data-dir"], "online", node_cfg=node)
    json.dumps(payload, allow_nan=False)  # strict JSON: no infinity, no NaN
    [row] = payload["privacy"]["datasets"]
    eps = dp_fedavg_epsilon(2.0, 5, 1e-6)
    assert row["dataset"] == "mds" and row["budget_epsilon"] == 30.0 and row["budget_source"] == "operator"
    assert row["spent_epsilon"] == pytest.approx(eps) and row["spent_delta"] == pytest.approx(1e-6)
    assert row["runs"] == 2 and row["dp_runs"] == 1
    first, second = row["charges"]
    assert set(first) == set(second) == CHARGE_KEYS
    assert first["run"] == "1" and first["dp"] is True and first["epsilon"] == pytest.approx(eps)
    # a generation run is in the ledger and the report as "no DP guarantee", never as epsilon 0
    assert second["run"] == "2" and second["dp"] is False and second["epsilon"] is None
    assert payload["policy_limits"] == {}


def test_without_its_callers_config_the_heartbeat_finds_the_ledger_of_its_data_dir(node):  # noqa: F811
    guessed = heartbeat_payload("H1", node["data-dir"], "online")
    assert "privacy" not in guessed  # no ledger yet: nothing guessed
    assert "policy_limits" not in guessed  # the policy-file is a node-config key: unknown here
    _ask(node, run="5", dp_enabled=True, dp_noise_multiplier=3.0)
    [row] = heartbeat_payload("H1", node["data-dir"], "online")["privacy"]["datasets"]
    assert [c["run"] for c in row["charges"]] == ["5"]


def test_a_profile_reports_the_home_ledger_and_only_its_own_managers_runs(tmp_path, node):  # noqa: F811
    home = tmp_path / "home"
    prof = home / "managers" / "onco"
    prof.mkdir(parents=True)
    (prof / "profile.json").write_text(json.dumps({"manager_id": "mgr-onco"}))
    data = prof / "data"
    data.symlink_to(node["data-dir"], target_is_directory=True)
    base = {**node, "data-dir": str(data)}
    _ask({**base, "approvals-dir": str(prof / "approvals"), "manager-id": "mgr-onco"}, run="7",
         dp_enabled=True, dp_noise_multiplier=3.0)
    _ask({**base, "approvals-dir": str(home / "approvals"), "manager-id": "mgr-other"}, run="8",
         dp_enabled=True, dp_noise_multiplier=3.0)
    [row] = heartbeat_payload("H1", data, "online")["privacy"]["datasets"]
    assert (home_ledger_dir(home) / "ledger.jsonl").is_file()
    assert row["dp_runs"] == 2 and row["spent_epsilon"] == pytest.approx(2 * dp_fedavg_epsilon(3.0, 5, 1e-6))
    assert [c["run"] for c in row["charges"]] == ["7"]  # the other manager's run ids are not told


def test_the_heartbeat_announces_the_operators_limits_as_the_file_has_them(tmp_path, node):  # noqa: F811
    limits = tmp_path / "limits.json"
    body = {"*": {"min_cell_count": 10}, "mds": {"purposes": ["analysis", "training"], "require_dp": True}}
    limits.write_text(json.dumps(body))
    cfg = {**node, "policy-file": str(limits)}
    assert heartbeat_payload("H1", node["data-dir"], "online", node_cfg=cfg)["policy_limits"] == body
    limits.write_text(json.dumps({"mds": {"min_cell_count": "many"}}))
    assert "policy_limits" not in heartbeat_payload("H1", node["data-dir"], "online", node_cfg=cfg)
