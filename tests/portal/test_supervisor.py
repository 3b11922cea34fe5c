"""The demo supervisor restarts a crashed service with back-off, reports a crash loop, kills what
a dead service left behind, and stops everything in reverse order. Tiny real subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.ops.supervisor import Service, Supervisor, _start_time

PY = sys.executable


def _alive(pid: int) -> bool:
    st = _start_time(pid)
    if st is None:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait(pred, timeout: float = 30.0, step: float = 0.02):  # a bound, generous for a busy machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise TimeoutError


def _run(sup: Supervisor, seconds: float) -> None:
    end = time.monotonic() + seconds
    sup.watch(until=lambda: time.monotonic() >= end)


@pytest.fixture
def sup(tmp_path):
    lines: list[str] = []
    s = Supervisor(tmp_path / "logs", echo=lines.append, backoff_base=0.1, backoff_max=0.4,
                   reset_after=1.0, crash_loop=(4, 5.0), tick=0.02, leftover_grace=1.0)
    s.lines = lines
    yield s
    s.stop_all()


def test_a_crashing_service_is_restarted_with_doubling_backoff_and_reported(sup, tmp_path):
    starts = tmp_path / "starts"
    sup.start(Service("crasher", [PY, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"]))
    _run(sup, 3.0)
    restarts = [ln for ln in sup.lines if ln.startswith("restarting crasher")]
    assert restarts[0].startswith("restarting crasher after exit 3 (attempt 1, back-off 0.1 s)")
    assert restarts[1].startswith("restarting crasher after exit 3 (attempt 2, back-off 0.2 s)")
    assert restarts[2].startswith("restarting crasher after exit 3 (attempt 3, back-off 0.4 s)")
    assert "back-off 0.4 s" in restarts[3]  # capped
    assert any(ln.startswith("!!! crasher crashed 4 times") for ln in sup.lines)
    assert len(starts.read_text()) >= 5  # still being retried after the loud report
    assert sup.services[0].proc is not None


def test_sigkilled_service_comes_back_and_backoff_resets_after_uptime(sup, tmp_path):
    s = sup.start(Service("celery", [PY, "-c", "import time; time.sleep(60)"]))
    first = s.proc.pid
    os.kill(first, signal.SIGKILL)
    _run(sup, 0.5)
    assert "restarting celery after exit -9 (attempt 1, back-off 0.1 s)" in sup.lines[-2]
    second = s.proc.pid
    assert second != first and s.proc.poll() is None
    os.kill(second, signal.SIGKILL)
    _run(sup, 0.5)
    assert "(attempt 2, back-off 0.2 s)" in [ln for ln in sup.lines if ln.startswith("restarting")][-1]
    _run(sup, 1.3)  # up longer than reset_after
    os.kill(s.proc.pid, signal.SIGKILL)
    _run(sup, 0.5)
    assert "(attempt 1, back-off 0.1 s)" in [ln for ln in sup.lines if ln.startswith("restarting")][-1]
    assert s.proc.poll() is None


# A "SuperLink": its own child in its process group plus a child detached into a session of its
# own (as Flower's SuperExec is), which spawns a "ServerApp" in that session.
LINK = r"""
import subprocess, sys, time
out = sys.argv[1]
inner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
detached = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
    "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(120)", out + ".app"], start_new_session=True)
open(out, "w").write(f"{inner.pid} {detached.pid}")
time.sleep(120)
"""


def _link_pids(path: Path) -> list[int]:
    _wait(lambda: path.exists() and Path(str(path) + ".app").exists() and Path(str(path) + ".app").read_text())
    return [int(x) for x in path.read_text().split()] + [int(Path(str(path) + ".app").read_text())]


def test_a_dead_service_leaves_nothing_behind_before_its_restart(sup, tmp_path):
    out = tmp_path / "pids"
    s = sup.start(Service("superlink", [PY, "-c", LINK, str(out)]))
    pids = _link_pids(out)
    _run(sup, 0.3)  # the supervisor records the descendants while the service runs
    out.unlink()
    Path(str(out) + ".app").unlink()
    os.kill(s.proc.pid, signal.SIGKILL)  # the SuperLink dies; its ServerApp must not linger
    _run(sup, 0.5)
    _wait(lambda: not any(_alive(p) for p in pids), 5)
    new = _link_pids(out)  # and it was restarted, with new children
    assert not set(new) & set(pids) and all(_alive(p) for p in new)


def test_stop_all_stops_in_reverse_order_and_kills_detached_descendants(tmp_path):
    lines: list[str] = []
    sup = Supervisor(tmp_path / "logs", echo=lines.append, tick=0.02)
    order = tmp_path / "order"
    trap = ("import signal, sys, time\n"
            "def bye(*_):\n"
            f"    open({str(order)!r}, 'a').write(sys.argv[1] + ' ')\n"
            "    time.sleep(0.2); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "open(sys.argv[2], 'w').write('up')\n"
            "while True: time.sleep(1)\n")
    for name in ("first", "second", "third"):
        sup.start(Service(name, [PY, "-c", trap, name, str(tmp_path / f"{name}.up")],
                          ready=lambda n=name: (tmp_path / f"{n}.up").exists()))
    out = tmp_path / "pids"
    sup.start(Service("superlink", [PY, "-c", LINK, str(out)]))
    pids = _link_pids(out)
    _run(sup, 0.3)
    t0 = time.monotonic()
    sup.stop_all()
    assert time.monotonic() - t0 < 20
    # SIGTERM goes to every group at once (reverse order); each exits in its own time
    assert sorted(order.read_text().split()) == ["first", "second", "third"]
    assert not any(_alive(p) for p in pids)


def test_an_adopted_service_restarts_with_its_own_command_line_and_environment(sup, tmp_path):
    out = tmp_path / "env"
    log = open(tmp_path / "adopted.log", "ab")
    proc = subprocess.Popen([PY, "-c", f"import os, time; open({str(out)!r}, 'a').write(os.environ['PROBE'] + ' ');"
                                       "time.sleep(60)"],
                            env={**os.environ, "PROBE": "from-elsewhere"}, cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    s = sup.adopt(Service("identity-provider", [], proc=proc, log_path=tmp_path / "adopted.log"))
    _wait(lambda: out.exists() and out.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    _run(sup, 0.6)
    assert s.proc.pid != proc.pid
    _wait(lambda: out.read_text().split() == ["from-elsewhere", "from-elsewhere"])
    assert "restarted identity-provider" in sup.lines[-1]


# A "node agent" whose detached "SuperNode" finishes its work on SIGTERM (or, stubborn, ignores it).
AGENT = r"""
import subprocess, sys, time
child = ("import signal, sys, time\n"
         "def bye(*_):\n"
         "    time.sleep(0.2); open(sys.argv[1], 'w').write('graceful'); sys.exit(0)\n"
         "signal.signal(signal.SIGTERM, bye if sys.argv[2] == 'polite' else signal.SIG_IGN)\n"
         "while True: time.sleep(1)\n")
p = subprocess.Popen([sys.executable, "-c", child, sys.argv[1] + ".done", sys.argv[2]], start_new_session=True)
open(sys.argv[1], "w").write(str(p.pid))
time.sleep(120)
"""


@pytest.mark.parametrize("manners", ["polite", "stubborn"])
def test_what_a_dead_service_left_gets_sigterm_then_sigkill(sup, tmp_path, manners):
    out = tmp_path / "agent"
    sup.leftover_grace = 3.0
    s = sup.start(Service("node", [PY, "-c", AGENT, str(out), manners]))
    _wait(lambda: out.exists() and out.read_text())
    child = int(out.read_text())
    _run(sup, 0.3)
    out.unlink()
    t0 = time.time()
    os.kill(s.proc.pid, signal.SIGKILL)
    end = time.monotonic() + 10
    sup.watch(until=lambda: out.exists() or time.monotonic() > end)  # until the service is back
    assert out.exists() and not _alive(child)
    back_after = out.stat().st_mtime - t0
    done = Path(str(out) + ".done")
    if manners == "polite":  # it had the time to finish, and the service came back after it
        assert done.exists() and done.stat().st_mtime <= out.stat().st_mtime
        assert back_after < 2.5
    else:  # ignored SIGTERM: killed once the grace (3 s here) ran out, then the restart
        assert not done.exists() and back_after >= 2.9
