"""`manage.py demo` under faults: a SIGKILLed Celery worker, embedded Redis, portal, worker-node
agent or SuperLink comes back by itself (what it had started goes with it: the node's SuperNode,
the SuperLink's ServerApp launcher), and SIGTERM stops everything, leaving no process behind. The whole demo, real processes, isolated var/ and ports."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.ops.supervisor import port_open

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                    out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                continue
    return out


def _one(pid: int, needle: str) -> int:
    found = [p for p, cmd in _children(pid).items() if needle in cmd]
    assert len(found) == 1, (needle, _children(pid))
    return found[0]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(pred, timeout: float, what: str, out: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise TimeoutError(f"{what} after {timeout:g} s\n{out.read_text()[-3000:]}")


def test_demo_restarts_what_dies_and_stops_cleanly(tmp_path):
    var = tmp_path / "var"
    port, link = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "OIDC_ISSUER")}
    env.update({"FEDHAEM_VAR_DIR": str(var), "EMBEDDED_REDIS_PORT": str(_free_port()),
                "DEV_IDP_PORT": str(_free_port()), "FLOWER_CONTROL_ADDRESS": f"127.0.0.1:{link}",
                "FLOWER_FLEET_ADDRESS": f"127.0.0.1:{link}", "PYTHONUNBUFFERED": "1"})
    out = tmp_path / "demo.out"
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port)], cwd=REPO, env=env,
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    seen: set[int] = set()
    try:
        _wait(lambda: "FedHaem is running" in out.read_text() or demo.poll() is not None, 300, "demo up", out)
        assert demo.poll() is None, out.read_text()[-3000:]
        seen |= set(_children(demo.pid))

        worker = _one(demo.pid, "celery -A portal worker -Q celery ")
        os.kill(worker, signal.SIGKILL)
        _wait(lambda: "restarting worker after exit -9 (attempt 1, back-off 1 s)" in out.read_text(), 15,
              "worker restart announced", out)
        _wait(lambda: any("celery -A portal worker -Q celery " in c for p, c in _children(demo.pid).items() if p != worker),
              15, "new worker", out)

        redis = _one(demo.pid, "redis-server")
        os.kill(redis, signal.SIGKILL)
        _wait(lambda: "restarting redis after exit -9" in out.read_text(), 15, "redis restart announced", out)
        _wait(lambda: any("redis-server" in c for p, c in _children(demo.pid).items() if p != redis),
              15, "new redis", out)

        portal = _one(demo.pid, "portal.asgi:application")
        os.kill(portal, signal.SIGKILL)
        _wait(lambda: "restarting portal after exit -9" in out.read_text(), 15, "portal restart announced", out)
        _wait(lambda: port_open(port), 60, "portal listening again", out)

        # A worker node's agent dies: its SuperNode (a session of its own) must not live on.
        node = _one(demo.pid, "--name hosp-c")
        supernode = [p for p, c in _children(node).items() if "supernode" in c]
        assert supernode
        os.kill(node, signal.SIGKILL)
        _wait(lambda: not any(_alive(p) for p in supernode), 10, "SuperNode of the dead node agent gone", out)
        _wait(lambda: "restarting node-hosp-c after exit -9" in out.read_text(), 15, "node restart announced", out)
        _wait(lambda: any("--name hosp-c" in c for p, c in _children(demo.pid).items() if p != node), 15,
              "new node agent", out)

        superlink = _one(demo.pid, "superlink --ssl-ca-certfile")  # stock or tuned entry
        launchers = list(_children(superlink))  # Flower's SuperExec, in a session of its own
        assert launchers
        t0 = time.monotonic()
        os.kill(superlink, signal.SIGKILL)
        _wait(lambda: not any(_alive(p) for p in launchers), 10, "SuperExec of the dead SuperLink gone", out)
        gone = time.monotonic() - t0
        _wait(lambda: re.search(r"restarted superlink \(pid \d+\)", out.read_text()), 15, "superlink back", out)
        _wait(lambda: port_open(link), 30, "superlink listening again", out)
        print(f"SuperExec gone {gone:.1f} s after the SuperLink's SIGKILL")
        assert demo.poll() is None
        for pid in _children(demo.pid):
            seen.add(pid)
            seen |= set(_children(pid))
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
    assert "stopping" in out.read_text()
    left = [p for p in seen if _alive(p)]
    assert not left, f"left running after the demo stopped: {left}"
