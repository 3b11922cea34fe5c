"""A small process supervisor for `manage.py demo`: starts named processes in order, waits until
each is ready, stops them all (process groups, reverse order) on Ctrl-C or when one dies."""
from __future__ import annotations

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
    name: str
    cmd: list[str]
    env: dict = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None


class Supervisor:
    def __init__(self, log_dir: Path, echo=print):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.services: list[Service] = []
        self.on_stop: list[Callable[[], None]] = []
        self.echo = echo

    def start(self, service: Service) -> Service:
        service.log_path = self.log_dir / f"{service.name}.log"
        log = open(service.log_path, "ab")
        env = dict(os.environ)
        env.update(service.env)
        service.proc = subprocess.Popen(service.cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
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

    def watch(self, on_tick: Callable[[], None] | None = None) -> None:
        """Block until Ctrl-C or until a service dies."""
        try:
            while True:
                for s in self.services:
                    if s.proc.poll() is not None:
                        self.echo(f"{s.name} stopped (exit {s.proc.returncode}); see {s.log_path}")
                        return
                if on_tick:
                    on_tick()
                time.sleep(1)
        except KeyboardInterrupt:
            self.echo("\nstopping…")

    def stop_all(self) -> None:
        for s in reversed(self.services):
            if s.proc and s.proc.poll() is None:
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
                try:
                    os.killpg(s.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.services.clear()
        for hook in reversed(self.on_stop):
            hook()
        self.on_stop.clear()
