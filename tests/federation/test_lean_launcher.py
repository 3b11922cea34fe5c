"""Real processes: an idle worker node is lean. The prefork launcher starts without torch or the
ClientApp, forks its first task cold, warms up for the tasks that follow, and re-executes itself
lean once idle; runs before and after the release finish the same way. On a box with many nodes,
one warm process (fl_engine.deploy.zygote) forks every node's ClientApps instead: the launchers
stay lean, a launcher that is stopped takes its child with it, and when the warm process is gone
the launchers fork their tasks themselves."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from fl_engine.deploy import control, forking, zygote
from fl_engine.deploy.local import APP_DIR, LocalFederation
from fl_engine.deploy.processes import flower_env, start_supernode, start_zygote

pytestmark = pytest.mark.slow


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _run(fed: LocalFederation, tmp_path, seed: int, rounds: int = 1) -> dict:
    cfg = {"dataset": "study", "num_rounds": rounds, "min_nodes": len(fed.nodes), "local_epochs": 1, "seed": seed,
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


def test_a_warm_parent_leaves_its_children_nothing_to_import_for_the_stats_request(tmp_path, node_tables):
    """What a forked child imports for itself, every child pays again (at 50 nodes, a quarter of the
    box's ClientApp samples went to httpx's lazy `import httpcore` and pandas' pyarrow extension
    types): after the warm-up, the Runtime API client, reading the node's parquet table and the
    stats answer import nothing new."""
    table = next(iter(node_tables.values()))
    table.to_parquet(tmp_path / "t.parquet")
    code = f"""
import sys, json
from fl_engine.deploy.prefork import _warm_app
_warm_app()
before = set(sys.modules)
import pandas as pd
from flwr.supercore.runtime import RuntimeHttpClient
from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeRequest, handle_request
RuntimeHttpClient.from_server_address(server_address="127.0.0.1:9", insecure=True, root_certificates=None,
                                      interceptors=[])
df = pd.read_parquet({str(tmp_path / "t.parquet")!r})
handle_request(df, parse_run_config({{"dataset": "study"}}), NodeRequest("stats"), "H1")
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_flower_processes_run_without_usage_telemetry(tmp_path, node_tables, monkeypatch):
    """Flower posts a usage event to its telemetry service when a SuperLink, SuperNode, ServerApp
    or ClientApp starts unless FLWR_TELEMETRY_ENABLED=0: FedHaem's processes make no call outside
    the federation (and a ClientApp child no longer loads the CA store for that post); an operator
    who sets the variable keeps their choice."""
    monkeypatch.delenv("FLWR_TELEMETRY_ENABLED", raising=False)
    assert flower_env()["FLWR_TELEMETRY_ENABLED"] == "0"
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "1")
    assert flower_env()["FLWR_TELEMETRY_ENABLED"] == "1"
    monkeypatch.delenv("FLWR_TELEMETRY_ENABLED")
    table = next(iter(node_tables.values()))
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True, shared_warm=True) as fed:
        node = fed.add_node("H1", table, dataset="study")
        fed.wait_nodes_online(120)
        for pid in (fed.superlink.process.pid, fed.zygote.pid, node.process.pid, node.launcher.pid):
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert b"FLWR_TELEMETRY_ENABLED=0" in f.read().split(b"\0"), pid


def test_a_launcher_whose_supernode_was_killed_does_not_stay_behind(tmp_path, node_tables):
    """Flower's retry invoker retries a refused connection forever; the launcher's requests give
    up after forking.RETRY_WITHIN_S, so it notices its SuperNode is gone and exits instead of
    keeping its memory as an orphan."""
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


# The box's warm process (fl_engine.deploy.zygote): one torch import for all the nodes of a box

def test_the_box_warm_process_forks_every_nodes_clientapps_and_launchers_stay_lean(tmp_path, node_tables):
    tables = list(node_tables.values())[:2]
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True, release_after_s=600.0,
                         shared_warm=True) as fed:
        assert fed.zygote is not None and fed.zygote.alive()
        nodes = [fed.add_node(f"H{i}", t, dataset="study") for i, t in enumerate(tables, 1)]
        fed.wait_nodes_online(120)
        _run(fed, tmp_path, 1, rounds=2)
        zlog = fed.zygote.log_text()
        for node in nodes:
            text = node.launcher.log_text()
            # every task of the run went to the warm process; the launcher imported neither the
            # ClientApp nor torch, and holds what an idle lean launcher holds
            assert "(box warm process)" in text, text[-2000:]
            assert "did not fork" not in text and "ClientApp loaded in" not in text, text[-2000:]
            assert "torch loaded in" not in text, text[-2000:]
            assert _rss_mb(node.launcher.pid) < 200
            assert f"of launcher {node.launcher.pid} -> child" in zlog, zlog[-2000:]
            # the child wrote to its node's launcher log, not to the warm process's
            assert "forked by the box's warm process" in text, text[-2000:]
        # the children ran at the nodes' compute niceness: the warm process's own
        assert os.getpriority(os.PRIO_PROCESS, fed.zygote.pid) == max(10, os.getpriority(os.PRIO_PROCESS, 0))

        # the warm process dies: the launchers fork their tasks themselves, the next run completes
        fed.zygote.kill()
        _run(fed, tmp_path, 2)
        for node in nodes:
            text = node.launcher.log_text()
            assert "did not fork task" in text and "ClientApp loaded in" in text, text[-2000:]


def test_supernodes_that_claim_their_own_tasks_need_no_launcher_process(tmp_path, node_tables):
    """claims_in_node: each SuperNode claims its tasks in a thread and the box's warm process forks
    them; no launcher process, so a node is one process importing Flower. When the warm process
    is gone, a task runs in a fresh process (FAB pin kept) and the next run still completes."""
    tables = list(node_tables.values())[:2]
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True, shared_warm=True,
                         claims_in_node=True) as fed:
        nodes = [fed.add_node(f"H{i}", t, dataset="study") for i, t in enumerate(tables, 1)]
        fed.wait_nodes_online(120)
        assert all(n.launcher is None and n.processes() == [n.process] for n in nodes)
        _run(fed, tmp_path, 1, rounds=2)
        zlog = fed.zygote.log_text()
        for node in nodes:
            text = node.process.log_text()
            assert "claiming this SuperNode's tasks in its own process" in text, text[-2000:]
            assert "(box warm process)" in text and "forked by the box's warm process" in text, text[-2000:]
            assert f"of launcher {node.process.pid} -> child" in zlog, zlog[-2000:]
            assert _rss_mb(node.process.pid) < 200  # a SuperNode, no torch and no ClientApp in it
        fed.zygote.kill()
        _run(fed, tmp_path, 2)
        for node in nodes:
            text = node.process.log_text()
            assert "task -> fresh process" in text, text[-2000:]
            assert node.process.alive()


def test_claims_in_node_refuse_what_they_cannot_serve(tmp_path):
    """Claims in the SuperNode need the warm process and the tuned entry; a malformed claims
    setting stops the SuperNode with the variable's name; a task process without a token says so."""
    with pytest.raises(ValueError, match="claims_in_node needs"):
        start_supernode("H1", "127.0.0.1:9", None, tmp_path / "k", tmp_path / "d", tmp_path / "s",
                        tuning=True, claims_in_node=True)
    env = {**os.environ, "FEDHAEM_NODE_CLAIMS": '{"address": "127.0.0.1:9"}'}
    out = subprocess.run([sys.executable, "-m", "fl_engine.deploy.flower_tuning", "supernode", "--help"],
                         env=env, text=True, capture_output=True, timeout=120)
    assert out.returncode != 0 and "FEDHAEM_NODE_CLAIMS" in out.stderr and "zygote" in out.stderr, out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "fl_engine.deploy.prefork", "--one-task", "--runtime-api-address",
                          "127.0.0.1:9", "--insecure"], input="", text=True, capture_output=True, timeout=120)
    assert out.returncode != 0 and "no task token on stdin" in out.stderr, out.stderr[-2000:]


def _wait_log(proc, text: str, count: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.log_text().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.log_text().count(text) >= count, proc.log_text()[-2000:]


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "libtorch" in f.read()


def test_the_box_warm_process_is_lean_when_idle_and_sheds_torch_after_a_run(tmp_path, node_tables):
    """Lean like a launcher: the warm process starts without torch, loads it while a run's first
    children answer, and after its idle time re-executes itself lean (same pid, same socket); the
    next run completes the same way."""
    tables = list(node_tables.values())[:2]
    with LocalFederation(tmp_path / "fed", launcher="prefork", tuning=True, shared_warm=True,
                         claims_in_node=True, release_after_s=10.0) as fed:
        pid = fed.zygote.pid
        assert not _maps_torch(pid)
        [fed.add_node(f"H{i}", t, dataset="study") for i, t in enumerate(tables, 1)]
        fed.wait_nodes_online(120)
        _run(fed, tmp_path, 1, rounds=2)
        # torch comes in a quiet moment of the run, or right after it on a busy box
        _wait_log(fed.zygote, "torch loaded in", 1)
        _wait_log(fed.zygote, "re-executing lean", 1)
        _wait_log(fed.zygote, "ClientApp loaded (torch when a run comes)", 2)
        # released after the run, not between its rounds: no task came after the release
        text = fed.zygote.log_text()
        assert " -> child " not in text.split("re-executing lean", 1)[1], text[-3000:]
        assert fed.zygote.pid == pid and fed.zygote.alive() and not _maps_torch(pid), text[-3000:]
        _run(fed, tmp_path, 2)
        _wait_log(fed.zygote, "torch loaded in", 2)
        for node in fed.nodes.values():  # every task of both runs went through the warm process
            assert "did not fork" not in node.process.log_text()


def test_the_lean_warm_process_loads_torch_before_a_runs_training_forks(tmp_path):
    """torch is imported after a run's first forks and before the forks that follow (its training
    children, each of which would otherwise import torch itself): launchers connecting (or
    children exiting) do not put it off, only fork requests do, and a stream of requests that
    never pauses is held for it once TORCH_BY_S has passed since the first fork."""
    def connect() -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(str(sock))
        return conn

    proc, sock = start_zygote(tmp_path / "z1", release_after_s=600.0)
    kids, conns = [], []
    try:
        kids.append(zygote.spawn(sock, "127.0.0.1:9", "token", True, None, "stats-1"))
        deadline = time.monotonic() + 60
        # a launcher connects every 0.05 s, and no other fork request: torch comes meanwhile
        while "torch loaded in" not in proc.log_text() and time.monotonic() < deadline:
            conns.append(connect())
            if len(conns) > 20:  # launchers come and go
                conns.pop(0).close()
            time.sleep(0.05)
        text = proc.log_text()
        assert "torch loaded in" in text and f"(no fork request for {zygote.TORCH_QUIET_S:g} s)" in text, \
            text[-2000:]
    finally:
        for c in conns:
            c.close()
        for k in kids:
            k.kill()
        proc.stop()

    proc, sock = start_zygote(tmp_path / "z2", release_after_s=600.0)
    kids = []
    try:
        gap = zygote.TORCH_QUIET_S / 2
        for i in range(int(3 * zygote.TORCH_BY_S / gap)):  # a stream that never pauses long enough
            kids.append(zygote.spawn(sock, "127.0.0.1:9", "token", True, None, f"T{i}"))
            time.sleep(gap)
        _wait_log(proc, "torch loaded in", 1)
        text = proc.log_text()
        assert "after the run's first fork)" in text, text[-2000:]
        before, after = text.split("torch loaded in", 1)
        # the stream's first second forked lean, the rest after the import
        assert 0 < before.count(" -> child ") < len(kids) and after.count(" -> child ") > 0, text[-3000:]
    finally:
        for k in kids:
            k.kill()
        proc.stop()


def _child_pids(parent: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == parent:
                        out.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_a_warm_process_child_does_not_outlive_its_launcher_and_bad_requests_are_refused(tmp_path):
    proc, sock = start_zygote(tmp_path / "zygote")
    try:
        assert oct(os.stat(sock.parent).st_mode & 0o777) == "0o700"
        # a request that is not one: refused with a reason, and the process keeps serving
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(str(sock))
        socket.send_fds(conn, [b"{not json"], [1, 2])
        assert "bad request" in json.loads(conn.recv(4096))["error"]
        conn.close()
        for bad, says in ((b"5", "not a JSON object"), (b'{"address": "a", "token": "t", "parent": "1", "env": {}}',
                                                         "'parent' missing or not of type int")):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.connect(str(sock))
            socket.send_fds(conn, [bad], [1, 2])
            assert says in json.loads(conn.recv(4096))["error"]
            conn.close()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(str(sock))
        conn.send(json.dumps({"address": "127.0.0.1:1", "token": "t", "parent": 1, "env": {}}).encode())
        assert "stdout and stderr" in json.loads(conn.recv(4096))["error"]  # no descriptors passed
        conn.close()

        # a launcher (a real process using the launcher's own call) gets a child for a task, then
        # is killed before the task ends: the warm process stops that child
        code = (f"from fl_engine.deploy import zygote\n"
                f"c = zygote.spawn({str(sock)!r}, '127.0.0.1:9', 'token', True, None, 'T1')\n"
                f"print(c.pid, flush=True)\n"
                f"import time; time.sleep(600)\n")
        launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        child = int(launcher.stdout.readline())
        assert child in _child_pids(proc.pid)
        time.sleep(1.0)
        assert forking.alive(child)  # still trying to reach a Runtime API that is not there
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 10
        while forking.alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not forking.alive(child), proc.log_text()[-2000:]
        assert proc.alive()
    finally:
        proc.stop()
    assert not sock.exists()  # a stopped warm process leaves no socket behind


def test_spawn_without_a_warm_process_raises_so_the_launcher_forks_itself(tmp_path):
    with pytest.raises(OSError):
        zygote.spawn(tmp_path / "absent.sock", "127.0.0.1:9", "token", True, None, "T1", timeout_s=1)
