"""Processes ride out each other's deaths: `fedhaem-node start` stays up and its node is back
online after the SuperLink is SIGKILLed and restarted on the same port and state, and after its
own SuperNode is SIGKILLed; heartbeats resume when the manager comes back; a ServerApp exits
once its SuperLink is gone. Real processes (TLS, SuperNode authentication)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from fl_engine.deploy import control
from fl_engine.deploy.pki import ensure_dev_pki, ensure_node_keys
from fl_engine.deploy.processes import exit_when_superlink_gone, free_port, start_superlink

# Flower 1.42 holds a node online until HEARTBEAT_PATIENCE (2) x its heartbeat interval (30 s)
# after its last heartbeat.
ONLINE_HOLD_S = 60


def test_serverapp_watchdog_exits_once_the_superlink_is_unreachable():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    code = ("import time; from fl_engine.deploy.processes import exit_when_superlink_gone; "
            f"exit_when_superlink_gone('127.0.0.1:{port}', grace_s=1.0, interval_s=0.1); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        assert p.poll() is None  # reachable: it keeps running
        srv.close()
        t0 = time.monotonic()
        p.wait(10)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1 and "unreachable for 1 s" in p.stderr.read()
    assert took < 3.0


def test_serverapp_watchdog_leaves_in_process_grids_alone():
    class InProcessGrid:
        pass

    assert exit_when_superlink_gone(InProcessGrid()) is None
    assert exit_when_superlink_gone(None) is None


class _Manager(BaseHTTPRequestHandler):
    beats: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Manager.beats.append((time.monotonic(), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def _when(stamp: str) -> float:
    """Flower's "2026-12-03 10:21:35Z" as a POSIX time."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("resilience")
    pki = ensure_dev_pki(root / "pki")
    port = free_port()
    w = {"root": root, "pki": pki, "port": port, "db": root / "superlink.db",
         "kw": {"root_certificates": pki.ca_cert, "flwr_home": root / "flwr-cli"},
         "manager_port": free_port()}
    w["superlink"] = start_superlink(pki, root / "superlink", port=port, database=w["db"])
    keys = ensure_node_keys(root / "keys")
    w["node_id"] = control.register_node(keys.public_key, w["superlink"].address, name="H1", **w["kw"])
    w["out"] = open(root / "node.out", "wb")
    # The manager is down when the node starts; it comes up later in the test.
    w["node"] = subprocess.Popen(
        [sys.executable, "-m", "fl_engine.node.cli", "start", "--manager", f"http://127.0.0.1:{w['manager_port']}",
         "--superlink", w["superlink"].address, "--key-dir", str(root / "keys"), "--data-dir", str(root / "data"),
         "--name", "H1", "--root-certificates", str(pki.ca_cert), "--heartbeat-interval", "2",
         "--state-dir", str(root / "state")],
        stdout=w["out"], stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield w
    finally:
        p = w["node"]
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        w["out"].close()
        w["superlink"].stop()


def _node(w) -> dict:
    return next(n for n in control.list_nodes(w["superlink"].address, **w["kw"]) if n["node-id"] == w["node_id"])


def _node_log(w) -> str:
    return (w["root"] / "node.out").read_text(errors="replace")


def _supernode_log(w) -> str:
    return (w["root"] / "state" / "supernode.log").read_text(errors="replace")


def _wait(pred, timeout: float, what: str, w) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert w["node"].poll() is None, "fedhaem-node exited:\n" + _node_log(w)[-3000:]
        if pred():
            return time.monotonic() - t0
        time.sleep(1.0)
    raise TimeoutError(f"{what} after {timeout:g} s\n--- node\n{_node_log(w)[-3000:]}\n"
                       f"--- supernode\n{_supernode_log(w)[-3000:]}")


@pytest.mark.slow
def test_node_stays_up_and_reconnects_after_the_superlink_restarts(world):
    w = world
    _wait(lambda: _node(w)["status"] == "online", 90, "node online", w)
    reconnects_before = _supernode_log(w).count("Connection successful after")
    w["superlink"].process.kill()  # SIGKILL, whole process group
    killed_at = time.time()
    time.sleep(5)
    assert w["node"].poll() is None
    w["superlink"] = start_superlink(w["pki"], w["root"] / "superlink", port=w["port"], database=w["db"])
    # The SuperNode's own retries get it back (no restart needed: same node id, same state).
    took = _wait(lambda: _supernode_log(w).count("Connection successful after") > reconnects_before, 90,
                 "SuperNode reconnected", w)
    # Proof that the new SuperLink hears it: past the moment its last heartbeat from before the
    # kill expires, the node is still online (a silent node would be offline by then).
    time.sleep(max(0.0, killed_at + ONLINE_HOLD_S + 5 - time.time()))
    assert _node(w)["status"] == "online"
    print(f"SuperNode reconnected {took:.0f} s after the SuperLink restarted")

    # The manager comes back: heartbeats (failing so far, logged, never fatal) get through.
    assert "heartbeat to" in _node_log(w) and not _Manager.beats
    srv = HTTPServer(("127.0.0.1", w["manager_port"]), _Manager)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _wait(lambda: any(b[1].get("flower_node_id") == w["node_id"] and b[1]["status"] == "online"
                          for b in _Manager.beats), 30, "heartbeat after the manager came back", w)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.slow
def test_node_cli_restarts_a_killed_supernode(world):
    w = world
    _wait(lambda: _node(w)["status"] == "online", 90, "node online", w)
    pid = int(re.findall(r"SuperNode (?:restarted, )?pid (\d+)", _node_log(w))[-1])
    os.killpg(pid, signal.SIGKILL)
    killed_at = time.time()
    t0 = time.monotonic()
    # Killed without deactivating, the node is refused until its last heartbeat expires; the
    # CLI keeps restarting it (5 s apart while refused) and it comes back online as new.
    _wait(lambda: (n := _node(w))["status"] == "online" and _when(n["online-at"]) >= killed_at - 1, 150,
          "node online again after its SuperNode was killed", w)
    took = time.monotonic() - t0
    log = _node_log(w)
    assert "restarting the SuperNode in" in log and "SuperNode restarted" in log
    assert int(re.findall(r"SuperNode restarted, pid (\d+)", log)[-1]) != pid
    print(f"node online again {took:.0f} s after its SuperNode was SIGKILLed (Flower holds it {ONLINE_HOLD_S} s)")


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live descendant of `pid`, from /proc."""
    parent, cmd = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
                cmd[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                continue
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        for child, ppid in parent.items():
            if ppid == p:
                out.append((child, cmd[child]))
                stack.append(child)
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["flower", "prefork"])
def test_serverapp_exits_when_its_superlink_dies_even_as_a_zombie(tmp_path, launcher):
    """Flower's own chain (SuperExec and ServerApp watch their parent's pid) cannot see a
    SuperLink that is dead but not yet reaped; the ServerApp's watchdog can, whether the ServerApp
    is a fresh `flwr-serverapp` (Flower's SuperExec) or a child forked by the warm launcher."""
    from fl_engine.deploy.local import APP_DIR

    pki = ensure_dev_pki(tmp_path / "pki")
    sl = start_superlink(pki, tmp_path / "superlink", serverapp_launcher=launcher)

    def serverapps() -> list[int]:
        if launcher == "flower":
            return [p for p, c in _descendants(sl.process.pid) if "flwr-serverapp" in c]
        worker = sl.serverapp_launcher_pids()[1]  # the run's ServerApp: a child of the warm worker
        return [p for p, _ in _descendants(worker)] if worker else []
    kw = {"root_certificates": pki.ca_cert, "flwr_home": tmp_path / "flwr-cli"}
    leftovers: list[int] = []
    try:
        # No node ever comes: the ServerApp waits for two of them.
        control.start_run(APP_DIR, {"dataset": "study", "num_rounds": 2, "min_nodes": 2, "seed": 1,
                                    "round_timeout_s": 600.0}, sl.address, **kw)
        t0 = time.monotonic()
        while not (apps := serverapps()):
            assert time.monotonic() - t0 < 60, "no ServerApp started:\n" + sl.process.log_text()[-2000:]
            time.sleep(0.2)
        leftovers = [p for p, _ in _descendants(sl.process.pid)]
        time.sleep(3)
        assert _running(apps[0])
        os.kill(sl.process.pid, signal.SIGKILL)  # the leader only, and left unreaped
        t0 = time.monotonic()
        while _running(apps[0]) and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert not _running(apps[0]), f"the ServerApp outlived its SuperLink by {took:.0f} s"
        print(f"ServerApp exited {took:.1f} s after its SuperLink died")
    finally:
        sl.process.popen.wait(5)
        for pid in leftovers:  # Flower's SuperExec is in a session of its own
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        sl.stop()
