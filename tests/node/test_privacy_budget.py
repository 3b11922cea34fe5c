"""The node's privacy-budget ledger, through the ClientApp's own entry (a real registry, a real
ledger file, Flower's real Message and Context) and the accountant of dp-accounting."""
import json
import math

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fl_engine.cohort import generate_mds_cohort
from fl_engine.federation import client_app
from fl_engine.federation.config import parse_run_config
from fl_engine.federation.contract import to_flower
from fl_engine.federation.core import NodeRequest
from fl_engine.federation.flower_io import request_content
from fl_engine.federation.privacy import dp_fedavg_epsilon
from fl_engine.node import cli
from fl_engine.node.budget import (BudgetExceeded, LEDGER_FILE, LedgerError, home_ledger_dir, ledger_dir,
                                   read_ledger, set_budget)
from fl_engine.node.datasets import open_registry, register_table


@pytest.fixture(scope="module")
def table():
    df = generate_mds_cohort(200, seed=5)
    return df[df["age"].notna()].reset_index(drop=True)


@pytest.fixture(autouse=True)
def _flower_task():
    # What the SuperNode sets in a ClientApp process before it builds messages.
    old = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 99, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = old


@pytest.fixture
def node(tmp_path, table):
    data = tmp_path / "data"
    register_table(data, "mds", table, "MDS")
    return {"name": "H1", "data-dir": str(data), "trust-all-runs": "true"}


def _ask(node_cfg, run="7", task=None, **privacy):
    flat = {"dataset": "mds", "portal_run_id": run, "study_id": "3", "num_rounds": 5, **privacy}
    if task:
        flat["task"] = task
    cfg = parse_run_config(flat, strict=False)
    ctx = Context(run_id=99, node_id=1, node_config=dict(node_cfg), state=RecordDict(),
                  run_config=to_flower(cfg.to_contract()))
    msg = Message(content=request_content(NodeRequest("stats")), dst_node_id=1, message_type="query.stats")
    return client_app._answer(msg, ctx)


def test_the_accountant_gives_the_library_example_value():
    # dp-accounting's own test: noise multiplier 4.530877117 gives (1, 1e-6)-DP in one step.
    assert dp_fedavg_epsilon(4.530877117, 1, 1e-6) == pytest.approx(1.0, abs=1e-5)
    assert dp_fedavg_epsilon(1.0, 10, 1e-6) > dp_fedavg_epsilon(1.0, 5, 1e-6) > dp_fedavg_epsilon(2.0, 5, 1e-6)
    assert dp_fedavg_epsilon(0.0, 3) == math.inf and dp_fedavg_epsilon(1.0, 0) == 0.0


def test_a_run_that_would_overspend_is_refused_at_the_node_with_the_figures(node, tmp_path):
    folder = ledger_dir(node)
    set_budget(folder, "mds", 20.0, 1e-5)
    dp = {"dp_enabled": True, "dp_noise_multiplier": 1.0, "dp_clip_norm": 1.0}
    eps = dp_fedavg_epsilon(1.0, 5, 1e-6)
    _ask(node, run="7", **dp)
    _ask(node, run="7", **dp)  # a later message of the same run is not charged again
    [line] = read_ledger(folder)
    assert line["run"] == "7" and line["dataset"] == "mds" and line["epsilon"] == pytest.approx(eps)
    assert line["delta"] == 1e-6 and line["rounds"] == 5 and line["noise_multiplier"] == 1.0 and line["fingerprint"]
    before = (folder / LEDGER_FILE).read_bytes()
    # The refusal comes before any row is read: the table is gone and the answer is still the refusal.
    reg = open_registry(node["data-dir"])
    reg.table_file(reg.get("mds")).unlink()
    with pytest.raises(BudgetExceeded) as err:
        _ask(node, run="8", **dp)
    text = str(err.value)
    assert "dataset mds" in text and "budget epsilon 20" in text
    assert f"spent epsilon {eps:.4g}" in text and f"would add epsilon {eps:.4g}" in text
    assert f"total epsilon {2 * eps:.4g}" in text
    assert (folder / LEDGER_FILE).read_bytes() == before  # nothing charged for a refused run
    assert oct((folder / LEDGER_FILE).stat().st_mode & 0o777) == "0o600"


def test_runs_without_dp_are_recorded_as_no_guarantee_and_spend_nothing(node):
    set_budget(ledger_dir(node), "mds", 1.0, 1e-5)
    _ask(node, run="1")
    _ask(node, run="2", task="synthesis", generator="ctgan")
    lines = read_ledger(ledger_dir(node))
    assert [x["epsilon"] for x in lines] == [None, None]
    assert all("no DP guarantee" in x["note"] for x in lines)
    assert "not differentially private" in lines[1]["note"]
    with pytest.raises(BudgetExceeded):  # the budget of 1 is whole, and one DP run is more than that
        _ask(node, run="3", dp_enabled=True, dp_noise_multiplier=1.0)


def test_one_ledger_per_node_home_for_every_manager_profile(tmp_path, node):
    home = tmp_path / "home"
    default = {**node, "approvals-dir": str(home / "approvals")}
    other = {**node, "approvals-dir": str(home / "managers" / "scd" / "approvals")}
    assert ledger_dir(default) == ledger_dir(other) == home_ledger_dir(home)
    set_budget(home_ledger_dir(home), "mds", 20.0, 1e-5)
    dp = {"dp_enabled": True, "dp_noise_multiplier": 1.0}
    _ask({**default, "manager-id": "mgr-a"}, run="5", **dp)
    with pytest.raises(BudgetExceeded, match="over 1 DP run"):  # same run id at another manager is another run
        _ask({**other, "manager-id": "mgr-b"}, run="5", **dp)


def test_a_damaged_ledger_refuses_runs(node):
    folder = ledger_dir(node)
    folder.mkdir(parents=True)
    (folder / LEDGER_FILE).write_text('{"run": "1"}\n{"run": ')
    with pytest.raises(LedgerError, match="line 2"):
        _ask(node, run="9")


def test_budget_command_shows_spent_and_remaining(node, capsys):
    data = node["data-dir"]
    assert cli.main(["budget", "--data-dir", data, "--dataset", "mds", "--set-epsilon", "30"]) == 0
    _ask(node, run="4", dp_enabled=True, dp_noise_multiplier=2.0)
    capsys.readouterr()
    assert cli.main(["budget", "--data-dir", data, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["datasets"]
    eps = dp_fedavg_epsilon(2.0, 5, 1e-6)
    assert row["dataset"] == "mds" and row["budget_epsilon"] == 30 and row["dp_runs"] == 1
    assert row["spent_epsilon"] == pytest.approx(eps) and row["remaining_epsilon"] == pytest.approx(30 - eps)
