"""The embedded Redis persists: a queued Celery message survives a SIGKILL and restart of Redis,
and a task whose worker was SIGKILLed mid-task runs again (late acknowledgement + visibility
timeout from portal.settings). Real redis-server, real Celery worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.ops.embedded import _listening, ensure_redis, redis_command, redis_ready, stop_redis

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


class ForegroundRedis:
    """redis-server as the demo's supervisor runs it (own process group, not daemonized)."""

    def __init__(self, port: int, var_dir: Path):
        self.port, self.var_dir, self.proc = port, var_dir, None

    def start(self):
        self.proc = subprocess.Popen(redis_command(self.port, self.var_dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: redis_ready(self.port), 10, "redis answers PING")

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


def _send_probe(url: str) -> str:
    from celery import Celery

    app = Celery("probe", broker=url)
    app.conf.broker_connection_retry_on_startup = False
    res = app.send_task("probe.noop", args=[42], serializer="json")
    app.close()
    return res.id


@pytest.mark.parametrize("how", ["supervised", "daemonized"])
def test_queued_celery_message_survives_redis_sigkill(tmp_path, how):
    import redis

    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    fg = ForegroundRedis(port, tmp_path)
    if how == "supervised":
        fg.start()
    else:
        assert ensure_redis(port, tmp_path)
    try:
        client = redis.Redis.from_url(url)
        client.set("fedhaem:probe", "kept")
        task_id = _send_probe(url)
        assert client.llen("celery") == 1
        if how == "supervised":
            fg.kill9()
        else:
            os.kill(int((tmp_path / "redis" / "redis.pid").read_text()), signal.SIGKILL)
            _wait(lambda: not _listening(port), 5, "redis gone")
        client.close()
        assert not _listening(port)
        if how == "supervised":
            fg.start()
        else:
            assert ensure_redis(port, tmp_path)
        client = redis.Redis.from_url(url)
        assert client.get("fedhaem:probe") == b"kept"
        assert client.llen("celery") == 1
        import json

        message = json.loads(client.lindex("celery", 0))
        assert message["headers"]["id"] == task_id and message["headers"]["task"] == "probe.noop"
        assert (tmp_path / "redis" / "appendonly.aof").stat().st_size > 0
        client.close()
    finally:
        if how == "supervised":
            fg.stop()
        else:
            stop_redis(tmp_path)


PROBE_APP = '''
import os, time
from celery import Celery

app = Celery("probeapp")
app.config_from_object("django.conf:settings", namespace="CELERY")

@app.task(name="probe.slow")
def slow(path, seconds):
    with open(path, "a") as f:
        f.write(f"start {os.getpid()}\\n")
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write("done\\n")
'''


def _alive(worker, tmp_path) -> bool:
    if worker.poll() is not None:
        raise RuntimeError("worker exited:\n" + (tmp_path / "worker.log").read_text()[-3000:])
    return True


@pytest.mark.slow
def test_task_of_a_sigkilled_worker_runs_again_after_redis_restart(tmp_path):
    """Worker SIGKILLed mid-task, then Redis SIGKILLed too: after both restart the task runs."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    (tmp_path / "probeapp.py").write_text(PROBE_APP)
    visibility = 8
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update({"REDIS_URL": url, "FEDHAEM_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "portal.settings",
                "CELERY_VISIBILITY_TIMEOUT_S": str(visibility),
                "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])})
    worker_cmd = [sys.executable, "-m", "celery", "-A", "probeapp", "worker", "--pool", "threads",
                  "--concurrency", "1", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
    redis_srv = ForegroundRedis(port, tmp_path)
    redis_srv.start()
    out = tmp_path / "probe.out"
    log = open(tmp_path / "worker.log", "ab")
    worker = None
    try:
        from celery import Celery

        app = Celery("probeapp", broker=url)
        app.send_task("probe.slow", args=[str(out), 3], serializer="json")
        app.close()
        worker = subprocess.Popen(worker_cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        _wait(lambda: _alive(worker, tmp_path) and out.exists() and "start" in out.read_text(), 60, "task started")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(5)
        redis_srv.kill9()
        killed_at = time.monotonic()
        redis_srv.start()
        # Redelivery waits for the visibility timeout; a worker restarted after it restores at once.
        time.sleep(max(0.0, visibility + 1 - (time.monotonic() - killed_at)))
        worker = subprocess.Popen(worker_cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        _wait(lambda: _alive(worker, tmp_path) and "done" in out.read_text(), 60,
              f"task not redelivered: {out.read_text()!r}\n{(tmp_path / 'worker.log').read_text()[-3000:]}")
        starts = [line for line in out.read_text().splitlines() if line.startswith("start")]
        assert len(starts) == 2  # the killed run and the redelivered one
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        redis_srv.stop()


def test_redis_ready_waits_for_the_append_only_file_replay():
    """A Redis that still replays its file listens and answers -LOADING: not ready. (The supervised
    restart above once let a client in on the open port alone: BusyLoadingError.)"""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    replies = [b"-LOADING Redis is loading the dataset in memory\r\n", b"+PONG\r\n"]

    def serve():
        for reply in replies:
            conn, _ = srv.accept()
            with conn:
                assert conn.recv(64) == b"PING\r\n"
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert not redis_ready(port)  # listening, still loading
        assert redis_ready(port)
    finally:
        t.join(5)
        srv.close()
    assert not redis_ready(port)  # nothing listens

