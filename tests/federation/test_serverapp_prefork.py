"""Real processes: the prefork ServerApp launcher (fl_engine.deploy.serverapp_prefork) in place of
Flower's SuperExec at a SuperLink with TLS and SuperNode authentication, 3 SuperNodes. Runs in
file order: a run goes through; two concurrent runs get a child each; the warm worker SIGKILLed
between runs is restarted by its supervisor and the next run starts; a killed ServerApp child
fails its run."""
import os
import signal
import time
from pathlib import Path

import pytest

from fl_engine.deploy import control
from fl_engine.deploy.local import APP_DIR, LocalFederation

pytestmark = pytest.mark.slow

CFG = {"dataset": "study", "num_rounds": 1, "min_nodes": 3, "local_epochs": 1, "seed": 5,
       "round_timeout_s": 120.0}


@pytest.fixture(scope="module")
def fed(tmp_path_factory, node_tables):
    root = tmp_path_factory.mktemp("fed")
    with LocalFederation(root, launcher="prefork", serverapp_launcher="prefork") as f:
        for name, table in node_tables.items():
            f.add_node(name, table, dataset="study")
        f.wait_nodes_online(120)
        yield f


def _worker(fed, timeout: float = 60) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _sup, worker = fed.superlink.serverapp_launcher_pids()
        if worker is not None:
            return worker
        time.sleep(0.2)
    raise AssertionError("no prefork ServerApp worker:\n" + fed.superlink.process.log_text()[-3000:])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                out.append(int(entry))
    return out


def _run(fed, **extra) -> str:
    return control.start_run(APP_DIR, {**CFG, **extra}, fed.address, **fed.conn_kwargs())


def _logs(fed, run_id: str) -> str:
    return control.run_logs(run_id, fed.address, **fed.conn_kwargs())[-3000:]


def test_a_run_goes_through_a_forked_serverapp(fed):
    worker = _worker(fed)
    run_id = _run(fed)
    st = fed.wait_run(run_id, 300)
    assert st["status"] == "finished:completed", _logs(fed, run_id)
    log = fed.superlink.process.log_text()
    assert f"(run {run_id}) -> ServerApp child" in log
    assert "flwr-serverapp" not in " ".join(Path(f"/proc/{p}/cmdline").read_text() for p in _children(worker))
    # no Flower SuperExec was spawned: the SuperLink ran FedHaem's launcher under that name
    assert fed.superlink.serverapp_launcher_pids()[0] is not None


def test_two_concurrent_runs_get_a_child_each(fed):
    worker = _worker(fed)
    a, b = _run(fed, seed=6), _run(fed, seed=7)
    seen: set[int] = set()
    t0 = time.monotonic()
    while len(seen) < 2 and time.monotonic() - t0 < 60:
        seen |= set(_children(worker))
        time.sleep(0.1)
    for run_id in (a, b):
        st = fed.wait_run(run_id, 300)
        assert st["status"] == "finished:completed", _logs(fed, run_id)
    log = fed.superlink.process.log_text()
    pids = {line.rsplit("ServerApp child ", 1)[1].split()[0] for line in log.splitlines()
            if f"(run {a}) -> ServerApp child" in line or f"(run {b}) -> ServerApp child" in line}
    assert len(pids) == 2, log[-3000:]
    assert len(seen) >= 2  # both children were alive side by side at some point


def test_a_sigkilled_worker_is_restarted_and_the_next_run_starts(fed):
    old = _worker(fed)
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()
    while True:
        _sup, new = fed.superlink.serverapp_launcher_pids()
        if new is not None and new != old:
            break
        assert time.monotonic() - t0 < 30, fed.superlink.process.log_text()[-3000:]
        time.sleep(0.2)
    print(f"worker restarted {time.monotonic() - t0:.1f} s after SIGKILL")
    run_id = _run(fed, seed=8)
    st = fed.wait_run(run_id, 300)
    assert st["status"] == "finished:completed", _logs(fed, run_id)
    assert "restarting in" in fed.superlink.process.log_text()


def test_a_killed_serverapp_child_fails_its_run_visibly(fed):
    worker = _worker(fed)
    run_id = _run(fed, seed=9, num_rounds=20)
    t0 = time.monotonic()
    while not (kids := _children(worker)):
        assert time.monotonic() - t0 < 60, fed.superlink.process.log_text()[-3000:]
        time.sleep(0.1)
    time.sleep(1.0)
    os.kill(kids[0], signal.SIGKILL)
    st = fed.wait_run(run_id, 300)
    assert st["status"].startswith("finished:") and st["status"] != "finished:completed", st
    # the launcher goes on: the next run still starts
    run2 = _run(fed, seed=10)
    assert fed.wait_run(run2, 300)["status"] == "finished:completed", _logs(fed, run2)
