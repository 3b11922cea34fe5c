"""A small process supervisor for `manage.py demo`: starts named processes in order, waits until
each is ready, restarts one that dies, and stops them all (process groups, reverse order) on
Ctrl-C / SIGTERM.

A dead service is restarted after an exponential back-off (1, 2, 4 ... at most 30 s; back to 1 s
once it has stayed up a minute), with one log line per restart. A service that keeps crashing is
reported loudly and still retried: an operator would rather see a noisy demo than a dead one.

What a service started goes with it, before it is restarted: its process group, and the process
groups of the descendants it detached into sessions of their own (the SuperLink's SuperExec and
ServerApps, a worker node's SuperNode), which the supervisor records while the service runs. They
get SIGTERM and a few seconds to finish (a SuperNode then deactivates itself at the SuperLink,
so its successor is let in at once), then SIGKILL. Nothing is left to answer to a SuperLink that
is no longer there.
"""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class Service:
    """A supervised process. `cmd` empty and `proc` set: a process started elsewhere (adopted);
    it is restarted with the command line, environment and working directory it had."""

    name: str
    cmd: list[str]
    env: dict = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    # state kept by the supervisor
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    leftovers_until: float | None = None  # what it left gets SIGTERM, then SIGKILL at this time
    crashes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    descendants: dict = field(default_factory=dict)  # pid -> (start time, process group)
    spawn: tuple | None = None  # (argv, full environment, cwd) for restarts


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, start time in clock ticks), from /proc (Linux)."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        try:
            table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[19]))
        except (IndexError, ValueError):
            continue
    return table


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return int(stat[stat.rfind(")") + 2:].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Supervisor:
    def __init__(self, log_dir: Path, echo=print, backoff_base: float = 1.0, backoff_max: float = 30.0,
                 reset_after: float = 60.0, crash_loop: tuple[int, float] = (5, 300.0),
                 tick: float = 1.0, leftover_grace: float = 5.0):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.services: list[Service] = []
        self.on_stop: list[Callable[[], None]] = []
        self.echo = echo
        self.backoff_base, self.backoff_max, self.reset_after = backoff_base, backoff_max, reset_after
        self.crash_loop = crash_loop  # (crashes, within seconds): report loudly
        self.tick = tick
        # A dead service's descendants get this long after SIGTERM to finish (a SuperNode
        # deactivates itself at its SuperLink, so its successor is let in at once).
        self.leftover_grace = leftover_grace
        self._own_pgid = os.getpgid(0)

    # --- starting ---------------------------------------------------------------------------

    def _spawn(self, service: Service, argv: list[str], env: dict, cwd: str | None) -> subprocess.Popen:
        with open(service.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self, service: Service) -> Service:
        service.log_path = self.log_dir / f"{service.name}.log"
        env = dict(os.environ)
        env.update(service.env)
        service.spawn = (list(service.cmd), env, None)
        service.proc = self._spawn(service, service.cmd, env, None)
        service.started_at = time.monotonic()
        self.services.append(service)
        if service.ready:
            deadline = time.monotonic() + service.ready_timeout
            while not service.ready():
                if service.proc.poll() is not None:
                    raise RuntimeError(f"{service.name} exited with {service.proc.returncode}; "
                                       f"see {service.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service.name} not ready after {service.ready_timeout:.0f} s; "
                                       f"see {service.log_path}")
                time.sleep(0.2)
        self.echo(f"  started {service.name} (pid {service.proc.pid}, log {service.log_path})")
        return service

    def adopt(self, service: Service) -> Service:
        """Supervise a process started elsewhere (`service.proc`); see `Service`."""
        self.services.append(service)
        self._remember_spawn(service)
        return service

    def _remember_spawn(self, s: Service) -> None:
        if s.spawn is not None or s.proc is None:
            return
        if s.started_at == 0.0:
            s.started_at = time.monotonic()
        if s.log_path is None:
            s.log_path = self.log_dir / f"{s.name}.log"
        argv = s.proc.args if isinstance(s.proc.args, list) else None
        try:
            raw = Path(f"/proc/{s.proc.pid}/environ").read_bytes()
            env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
            cwd = os.readlink(f"/proc/{s.proc.pid}/cwd")
        except OSError:
            env, cwd = None, None
        if argv and env is not None:
            s.spawn = ([str(a) for a in argv], env, cwd)

    # --- watching ---------------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before restart number `attempt` (1, 2, 3 ...)."""
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))

    def check(self) -> None:
        """One supervision step: record descendants, restart what died and waited its back-off."""
        now = time.monotonic()
        table = _proc_table()
        children: dict[int, list[int]] = collections.defaultdict(list)
        for pid, (ppid, _pgid, _st) in table.items():
            children[ppid].append(pid)
        for s in self.services:
            if s.proc is None:
                continue
            if s.restart_at is None and s.proc.poll() is None:
                self._remember_spawn(s)
                self._record_descendants(s, table, children)
                if s.restarts and now - s.started_at >= self.reset_after:
                    s.restarts = 0  # it stayed up: the next crash starts the back-off again
                continue
            if s.restart_at is None:  # died since the last step
                code = s.proc.returncode
                self._kill_leftovers(s, signal.SIGTERM)
                s.leftovers_until = now + self.leftover_grace
                s.crashes.append(now)
                s.restarts += 1
                if s.spawn is None:
                    self.echo(f"{s.name} stopped (exit {code}) and cannot be restarted "
                              f"(its command line is unknown); see {s.log_path}")
                    s.restart_at = float("inf")
                    continue
                wait = self.backoff(s.restarts)
                self.echo(f"restarting {s.name} after exit {code} (attempt {s.restarts}, back-off {wait:g} s); "
                          f"see {s.log_path}")
                n, window = self.crash_loop
                recent = [t for t in s.crashes if now - t <= window]
                if len(recent) >= n:
                    self.echo(f"!!! {s.name} crashed {len(recent)} times in the last {window:g} s: "
                              f"it is still being restarted, but something is wrong; see {s.log_path}")
                s.restart_at = now + wait
            if s.leftovers_until is not None:
                if now < s.leftovers_until and self._leftovers_alive(s):
                    continue
                self._kill_leftovers(s)
                s.leftovers_until = None
            if now >= s.restart_at:
                argv, env, cwd = s.spawn
                try:
                    s.proc = self._spawn(s, argv, env, cwd)
                except OSError as exc:
                    self.echo(f"restarting {s.name} failed: {exc}")
                    s.restart_at = now + self.backoff(s.restarts)
                    continue
                s.restart_at, s.started_at, s.descendants = None, now, {}
                self.echo(f"  restarted {s.name} (pid {s.proc.pid})")

    def _record_descendants(self, s: Service, table: dict, children: dict) -> None:
        stack = list(children.get(s.proc.pid, ()))
        while stack:
            pid = stack.pop()
            if pid in table:
                _ppid, pgid, st = table[pid]
                s.descendants[pid] = (st, pgid)
                stack.extend(children.get(pid, ()))

    def _leftovers_alive(self, s: Service) -> bool:
        for pid, (st, _pgid) in s.descendants.items():
            if _start_time(pid) == st:
                try:
                    with open(f"/proc/{pid}/stat", "rb") as f:
                        if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            return True
                except (OSError, IndexError):
                    continue
        return False

    def _kill_leftovers(self, s: Service, sig: int = signal.SIGKILL) -> None:
        """Kill the dead service's process group and every recorded descendant's group."""
        groups = {s.proc.pid}
        for pid, (st, pgid) in list(s.descendants.items()):
            if _start_time(pid) != st:
                s.descendants.pop(pid)
                continue  # gone (or the pid was reused): leave it alone
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            # a group whose leader we saw (a detached SuperExec, SuperNode, ...): all of it
            if pgid in s.descendants or pgid == s.proc.pid:
                groups.add(pgid)
        for pgid in groups:
            if pgid == self._own_pgid:
                continue
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def watch(self, on_tick: Callable[[], None] | None = None,
              until: Callable[[], bool] | None = None) -> None:
        """Supervise until Ctrl-C (or until `until()` is true)."""
        try:
            while until is None or not until():
                self.check()
                if on_tick:
                    on_tick()
                time.sleep(self.tick)
        except KeyboardInterrupt:
            self.echo("\nstopping…")

    # --- stopping ---------------------------------------------------------------------------

    def stop_all(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = collections.defaultdict(list)
        for pid, (ppid, _pgid, _st) in table.items():
            children[ppid].append(pid)
        for s in reversed(self.services):
            if s.proc and s.proc.poll() is None:
                self._record_descendants(s, table, children)
                try:
                    os.killpg(s.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # Worker nodes stop their own SuperNode (another process group) before exiting: give
        # them the time to, or a SIGKILL would orphan it.
        deadline = time.monotonic() + 30
        for s in reversed(self.services):
            if s.proc is None:
                continue
            try:
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill_leftovers(s)
            try:
                s.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.services.clear()
        for hook in reversed(self.on_stop):
            hook()
        self.on_stop.clear()
