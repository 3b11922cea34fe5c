"""One warm process shared by the worker nodes of one box (a one-box federation: the demo, tests,
benchmarks): it imports Flower's ClientApp runtime, FedHaem's ClientApp and torch once, and forks
the ClientApp child of any of the box's nodes on request, so a run after an idle spell does not
pay every node's own torch import on the box's cores (fifty lean launchers warming at once on two
cores took 50-60 s each).

A node's prefork launcher (fl_engine.deploy.prefork, ``--zygote PATH``) stays lean: for each task
it claims, it sends this process the task's Runtime API address and token, its own pid, its
environment and its stdout/stderr (file descriptors over the Unix socket). This process forks;
the child takes the launcher's environment and output and runs Flower's ``run_clientapp`` with
the token, watching the launcher's pid as Flower's SuperExec children watch theirs. The launcher
learns the child's pid at once and its exit code when it ends; if the launcher's connection
closes first (the launcher was stopped or killed), the child is sent SIGTERM. Nothing of a
hospital's data passes through this process: the child reads its node's table itself, through
the node config its SuperNode hands to the ClientApp.

Trust: the socket lives in a directory only this user can open (0700) and every connection's
peer must run as this user (SO_PEERCRED). On a hospital's own machine (one node) the launcher
warms itself as before; this is for boxes that host many nodes of one operator.

No torch operation ever runs here (torch's thread pools are not fork-safe once started) and the
loop is single-threaded. If this process is gone or does not answer, launchers fall back to
warming themselves (fl_engine.deploy.prefork). A SuperNode that claims its own tasks
(prefork.serve_in_supernode) sends the same request from a thread of its own process.

Lean when idle (``--release-after``, 300 s): without torch until a run comes (serve's docstring).

    python -m fl_engine.deploy.zygote --socket /path/zygote.sock [--parent-pid PID] [--release-after S]
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from fl_engine.deploy import flower_tuning, forking

log = logging.getLogger("fedhaem.zygote")

MAX_MESSAGE = 1 << 20  # a request: address, token, certificates, the launcher's environment
REPLY_TIMEOUT_S = 30.0  # a launcher waits this long for the child's pid, then warms itself


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.send(json.dumps(message).encode())
    except OSError:
        pass  # the launcher is gone: its child was (or will be) stopped


def _parse_request(data: bytes) -> dict:
    """A launcher's request, checked before anything is forked for it (ValueError naming what is wrong)."""
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    for key, kind in (("address", str), ("token", str), ("parent", int), ("env", dict)):
        if not isinstance(request.get(key), kind):
            raise ValueError(f"{key!r} missing or not of type {kind.__name__}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items()):
        raise ValueError("'env' must map names to strings")
    if request.get("certificates") is not None and not isinstance(request["certificates"], str):
        raise ValueError("'certificates' must be base64 text")
    return request


def _child(request: dict, fds: list[int], keep_closed: list) -> None:
    """In the forked child: the launcher's output and environment, then the task."""
    from fl_engine.deploy.prefork import _run_child  # cycle: prefork imports zygote

    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for s in keep_closed:  # the zygote's sockets and pipe: only the zygote holds them
            s.close() if isinstance(s, socket.socket) else os.close(s)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        if os.environ.get("FEDHAEM_FLOWER_TUNING") == "1":
            flower_tuning.apply()  # as the launcher would have: its node's settings, not this process's
        certificates = base64.b64decode(request["certificates"]) if request.get("certificates") else None
        log.info("task %s of launcher %d forked by the box's warm process %d", request.get("task"),
                 request["parent"], os.getppid())
    except BaseException:  # noqa: BLE001 - a child must never return into the zygote's loop
        logging.getLogger("fedhaem.zygote").exception("zygote child failed to start")
        os._exit(code)
    _run_child(request["address"], request["token"], bool(request.get("insecure")), certificates,
               int(request["parent"]))


TORCH_QUIET_S = 0.2  # lean: torch is imported once no fork request has come for this long after a fork
TORCH_BY_S = 1.0  # lean: a request this long after a run's first fork waits for torch, whatever came since


def serve(path: Path, parent_pid: int | None = None, release_after_s: float | None = None,
          listen_fd: int | None = None) -> None:
    """Warm up, then fork ClientApp children for the launchers that connect to `path` until
    SIGTERM (or until `parent_pid` is gone).

    With `release_after_s`, lean when idle, as a launcher is: it starts with the ClientApp but
    without torch (a run's first messages are stats requests, which need none), imports torch
    once it has forked a child and no fork request came for TORCH_QUIET_S (while the children
    answer: the training requests that follow fork warm). Children exiting and launchers
    connecting do not delay it, and a request that comes TORCH_BY_S or more after the first fork
    waits for the import: a run's stats requests come in one burst and its training requests only
    after every stats reply, so a stream of stats requests can hold torch back at most that long
    (before, any event restarted the quiet time: at 20 nodes with claims in the SuperNodes it did
    not come until the first round's training children had each imported torch themselves, 22.6 s
    of training per node per run instead of 0.55 s). After `release_after_s` without a child
    or a connection it re-executes itself lean, same pid, keeping its listening socket
    (`listen_fd`): launchers that connect meanwhile wait in its backlog."""
    from fl_engine.deploy.prefork import (  # cycle: prefork imports zygote
        _warm_app, _warm_imports, _warm_torch, compute_nice, lower_priority,
    )

    niceness = lower_priority(compute_nice())
    t = time.monotonic()
    warm = release_after_s is None
    if warm:
        _warm_imports()
    else:
        _warm_app()
    if os.environ.get("FEDHAEM_FLOWER_TUNING") == "1":
        flower_tuning.apply()
    log.info("%s in %.2f s", "warm" if warm else "ClientApp loaded (torch when a run comes)", time.monotonic() - t)

    if listen_fd is not None:  # re-executed: the same socket, still bound and listening
        listener = socket.socket(fileno=listen_fd)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)
        listener.bind(str(tmp))
        listener.listen(128)
        os.replace(tmp, path)  # launchers see the socket only once it accepts
    listener.setblocking(False)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector when a child exits

    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listen")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    conn_of: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    child_of: dict[socket.socket, int] = {}
    me = os.getuid()
    log.info("box warm process %d serving %s (niceness %d)", os.getpid(), path, niceness)

    def _stop(signum, _frame):
        for pid in list(conn_of):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        path.unlink(missing_ok=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def _drop(conn: socket.socket) -> None:
        sel.unregister(conn)
        child_of.pop(conn, None)
        conn.close()

    first_fork = last_fork = None  # since the last (lean) start: torch is wanted once a run has come
    last_busy = time.monotonic()

    def _load_torch(why: str) -> None:
        nonlocal warm, last_busy
        t = time.monotonic()
        _warm_torch()
        warm = True
        last_busy = time.monotonic()  # idle time counts from now, not from before the import
        log.info("torch loaded in %.2f s (%s)", last_busy - t, why)

    while True:
        timeout = 2.0
        if last_fork is not None and not warm:
            timeout = max(0.0, last_fork + TORCH_QUIET_S - time.monotonic())
            if timeout == 0.0:
                _load_torch(f"no fork request for {TORCH_QUIET_S:g} s")
                timeout = 2.0
        events = sel.select(timeout=timeout)
        for key, _ in events:
            if key.data == "wake":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif key.data == "listen":
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                if _peer_uid(conn) != me:
                    log.warning("refused a connection from another user")
                    conn.close()
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
            else:
                conn = key.fileobj
                try:
                    data, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, 4)
                except BlockingIOError:
                    continue
                except OSError:
                    data, fds = b"", []
                if not data:  # the launcher closed its end: stop the child it was waiting on
                    pid = child_of.get(conn)
                    if pid is not None and pid in conn_of:
                        log.info("launcher of child %d is gone: stopping it", pid)
                        try:
                            os.kill(pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass
                        conn_of.pop(pid, None)
                    _drop(conn)
                    continue
                if conn in child_of or len(fds) != 2:
                    for fd in fds:
                        os.close(fd)
                    _send(conn, {"error": "one request per connection, with stdout and stderr"})
                    _drop(conn)
                    continue
                try:
                    request = _parse_request(data)
                except ValueError as err:
                    for fd in fds:
                        os.close(fd)
                    _send(conn, {"error": f"bad request: {err}"})
                    _drop(conn)
                    continue
                if not warm and first_fork is not None and time.monotonic() - first_fork >= TORCH_BY_S:
                    _load_torch(f"a request {time.monotonic() - first_fork:.1f} s after the run's first fork")
                others = [listener, *child_of, conn, wake_r, wake_w]
                pid = os.fork()
                if pid == 0:
                    _child(request, fds, others)
                for fd in fds:
                    os.close(fd)
                conn_of[pid] = conn
                child_of[conn] = pid
                last_fork = time.monotonic()
                if first_fork is None:
                    first_fork = last_fork
                _send(conn, {"pid": pid})
                log.info("task %s of launcher %s -> child %d", request.get("task"), request["parent"], pid)
        try:  # every exited child; the launcher waiting on it learns its exit code
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = conn_of.pop(pid, None)
                if conn is not None:
                    _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                    if conn in child_of:
                        _drop(conn)
        except ChildProcessError:
            pass
        if parent_pid is not None and not forking.alive(parent_pid):
            log.info("parent %d is gone; exiting", parent_pid)
            _stop(None, None)
        if conn_of or len(sel.get_map()) > 2:  # a child, or a launcher connected
            last_busy = time.monotonic()
        elif warm and release_after_s is not None and time.monotonic() - last_busy > release_after_s:
            log.info("idle for %.0f s: re-executing lean to release torch", release_after_s)
            os.set_inheritable(listener.fileno(), True)
            argv = [sys.executable, "-m", "fl_engine.deploy.zygote", "--socket", str(path),
                    "--release-after", str(release_after_s), "--listen-fd", str(listener.fileno())]
            if parent_pid is not None:
                argv += ["--parent-pid", str(parent_pid)]
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, argv)


class RemoteChild:
    """A launcher's view of a child forked by the box's warm process: its pid, and its exit code
    once the warm process reports it."""

    def __init__(self, conn: socket.socket, pid: int):
        self.conn, self.pid = conn, pid
        self.code: int | None = None

    def poll(self) -> bool:
        """True once the child has exited (or the warm process is gone: it cannot tell any more)."""
        if self.code is not None:
            return True
        try:
            data = self.conn.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.code = -1  # the warm process is gone; the child watches this launcher on its own
        else:
            self.code = int(json.loads(data).get("exit", -1))
        self.conn.close()
        return True

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.conn.close()


def spawn(path: str | Path, address: str, token: str, insecure: bool, certificates: bytes | None,
          task: str | int, timeout_s: float = REPLY_TIMEOUT_S) -> RemoteChild:
    """Ask the box's warm process at `path` to fork the ClientApp child of a claimed task for this
    launcher. Raises OSError (or ValueError) when it cannot: the caller then forks the task itself."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.settimeout(timeout_s)
        conn.connect(str(path))
        request = {"address": address, "token": token, "insecure": insecure,
                   "certificates": base64.b64encode(certificates).decode() if certificates else None,
                   "parent": os.getpid(), "env": dict(os.environ), "task": str(task)}
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(conn, [json.dumps(request).encode()], [1, 2])
        data = conn.recv(MAX_MESSAGE)
        if not data:
            raise ConnectionError(f"the box's warm process at {path} closed the connection")
        reply = json.loads(data)
        if "pid" not in reply:
            raise ConnectionError(f"the box's warm process at {path} refused: {reply.get('error')}")
        conn.setblocking(True)
        return RemoteChild(conn, int(reply["pid"]))
    except BaseException:
        conn.close()
        raise


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="FedHaem: one warm process forking the ClientApps of a box's nodes")
    p.add_argument("--socket", required=True, help="Unix socket path (its directory is made 0700)")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    p.add_argument("--release-after", type=float, default=300.0,
                   help="lean when idle: torch only once a run comes, re-executed lean after this many "
                        "seconds without a child or a connection; 0: import everything at start, stay warm")
    p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # kept across a release
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve(Path(a.socket), a.parent_pid, release_after_s=a.release_after or None, listen_fd=a.listen_fd)


if __name__ == "__main__":
    main()
