"""Real processes: an idle worker node is lean. The prefork launcher starts without torch or the
ClientApp, forks its first task cold, warms up for the tasks that follow, and re-executes itself
lean once idle; runs before and after the release finish the same way."""
from __future__ import annotations

import os
import re
import time

import pytest

from fl_engine.deploy import control
from fl_engine.deploy.local import APP_DIR, LocalFederation

pytestmark = pytest.mark.slow


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _run(fed: LocalFederation, tmp_path, seed: int) -> dict:
    cfg = {"dataset": "study", "num_rounds": 1, "min_nodes": 1, "local_epochs": 1, "seed": seed,
           "round_timeout_s": 120.0, "portal_run_id": str(seed),
           "metrics_path": str(tmp_path / f"metrics-{seed}.jsonl"), "model_dir": str(tmp_path / f"model-{seed}")}
    run_id = control.start_run(APP_DIR, cfg, fed.address, **fed.conn_kwargs())
    status = fed.wait_run(run_id, 300)
    assert status["status"] == "finished:completed", control.run_logs(run_id, fed.address, **fed.conn_kwargs())[-3000:]
    return status


def test_launcher_is_lean_when_idle_and_serves_runs_before_and_after_releasing(tmp_path, node_tables):
    table = next(iter(node_tables.values()))
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True, release_after_s=20.0) as fed:
        node = fed.add_node("H1", table, dataset="study")
        fed.wait_nodes_online(120)
        launcher = node.launcher
        lean = _rss_mb(launcher.pid)
        assert lean < 200, f"idle launcher holds {lean:.0f} MB before any task"

        _run(fed, tmp_path, 1)
        assert launcher.alive()
        # the first task's child was forked after the ClientApp was loaded and before torch was
        text = launcher.log_text()
        app, fork, torch_ = (text.find("ClientApp loaded in"), text.find("-> child"), text.find("torch loaded in"))
        assert -1 < app < fork < torch_, text[-2000:]
        # warm after its first task, then released (same pid) once idle for 20 s
        deadline = time.monotonic() + 120
        while "re-executing to release" not in launcher.log_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = launcher.log_text()
        assert "re-executing to release" in log, log[-2000:]
        time.sleep(2)  # the new image starts
        assert launcher.alive() and launcher.pid == node.launcher.pid
        released = _rss_mb(launcher.pid)
        assert released < 200, f"launcher holds {released:.0f} MB after releasing"

        _run(fed, tmp_path, 2)
        assert launcher.log_text().count("serving 127.0.0.1") >= 2  # started, and re-executed at least once
        # training yields the CPU to the control plane: niceness 10 (FEDHAEM_NODE_COMPUTE_NICE),
        # absolute, so re-executing did not add it twice
        expected = max(10, os.getpriority(os.PRIO_PROCESS, 0))
        assert os.getpriority(os.PRIO_PROCESS, launcher.pid) == expected
        # a one-box federation runs its SuperNodes below the SuperLink (LocalFederation.node_niceness)
        assert os.getpriority(os.PRIO_PROCESS, node.process.pid) == max(5, os.getpriority(os.PRIO_PROCESS, 0))
        assert os.getpriority(os.PRIO_PROCESS, fed.superlink.process.pid) == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_claimed_task_outlives_a_slow_warm_up(tmp_path, node_tables, monkeypatch):
    """The lean launcher claims a task, then imports the ClientApp before forking its child; with
    fifty nodes warming at once on two cores that took 50 s, past the 30 s a claimed task may go
    without a heartbeat, and the child was refused. The parent heartbeats the claim meanwhile."""
    from fl_engine.deploy import prefork
    monkeypatch.setenv(prefork.FAULT_SLOW_WARM_ENV, "40")
    table = next(iter(node_tables.values()))
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True, release_after_s=600.0) as fed:
        node = fed.add_node("H1", table, dataset="study")
        fed.wait_nodes_online(120)
        _run(fed, tmp_path, 3)
        text = node.launcher.log_text()
        # the first task's child ran on the task claimed before the slow import: the SuperNode
        # never refused its token and the launcher forked that task once
        assert "task-token authentication failed" not in node.process.log_text()
        tasks = re.findall(r"task (\d+) \(run \d+\) -> child", text)
        assert tasks and len(tasks) == len(set(tasks)), text[-2000:]
        assert "(0 heartbeats" not in text and "heartbeats for the claimed task" in text, text[-2000:]


def test_a_cold_node_answers_the_stats_request_without_loading_torch(node_tables):
    """A run's first message to a node is the stats request; after an idle spell the node answers
    it from a cold child. That child must not pay for torch (seconds of CPU per node, at every
    node at once): only training loads it."""
    import json
    import subprocess
    import sys

    table = next(iter(node_tables.values()))
    code = f"""
import sys, json, pandas as pd
import fl_engine.federation.client_app  # what a cold ClientApp child imports
from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeRequest, check_reply_privacy, handle_request
df = pd.read_json(sys.stdin, orient="split")
cfg = parse_run_config({{"dataset": "study"}})
reply = handle_request(df, cfg, NodeRequest("stats"), "H1")
check_reply_privacy("stats", reply, None)
print(json.dumps({{"torch": "torch" in sys.modules, "columns": len(reply.stats["columns"])}}))
"""
    out = subprocess.run([sys.executable, "-c", code], input=table.to_json(orient="split"), text=True,
                         capture_output=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["columns"] > 0
    assert got["torch"] is False


def test_a_launcher_whose_supernode_was_killed_does_not_stay_behind(tmp_path, node_tables):
    """Flower's retry invoker retries a refused connection forever; the launcher's requests give
    up after forking.RETRY_WITHIN_S, so it notices its SuperNode is gone and exits instead of
    keeping its memory as an orphan."""
    from fl_engine.deploy import forking
    table = next(iter(node_tables.values()))
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True) as fed:
        node = fed.add_node("H1", table, dataset="study")
        fed.wait_nodes_online(120)
        time.sleep(2)  # the launcher is waiting in AcquireTask at its SuperNode
        node.process.popen.kill()
        node.process.popen.wait()
        deadline = time.monotonic() + forking.RETRY_WITHIN_S + 30
        while node.launcher.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert node.launcher.popen.poll() is not None, node.launcher.log_text()[-2000:]
        assert "is gone; exiting" in node.launcher.log_text()
