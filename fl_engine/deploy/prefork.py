"""Prefork launcher: a warm stand-in for ``flower-superexec`` next to a SuperNode started with
``--isolation process``.

Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message: ~1.4 s of Python
and Flower start-up, ~1.8 s ``import torch`` and ~1.1 s of lazy ``torch._dynamo`` import on the
first optimiser step, per message and node (FedHaem's models now train with
fl_engine.models.optim.Adam, which needs no torch._dynamo). This process pays that once: it
imports flwr, torch and the FedHaem ClientApp, then acquires ClientApp tasks from the SuperNode's
Runtime API exactly as SuperExec does (``AcquireTask``), and ``fork()``s a child per task that
runs Flower's own ``run_clientapp()`` with the task token. No torch operation runs before a fork
(torch's thread pools are not fork-safe once started), and the parent stays single-threaded.

Lean when idle: an idle launcher holds only flwr's Runtime API client (~100 MB instead of ~460 MB
with torch and the ClientApp). On the first task after an idle spell (a run's stats request,
which needs no torch) the parent imports the ClientApp, forks the task's child, and only then
imports torch for the training tasks that follow, while that child answers; once it
has had no task and no child for `--release-after` seconds (300), it re-executes itself (same
pid, same arguments) to give that memory back.

Uses Flower internals without patching them (pinned to flwr 1.42; tests/federation cover it),
except one check in each child: the run's FAB must configure FedHaem's installed ClientApp and
carry no code (fl_engine.deploy.fab_pin), so no manager can make the hospital run its own code.
TLS and SuperNode authentication are untouched: they live in the SuperNode's Fleet connection.

A task claimed before the ClientApp is imported is kept alive by heartbeats from the parent until
its child starts (ClaimKeeper). Fault injection for tests:
FEDHAEM_FAULT_SLOW_WARM_S adds that many seconds to that import (a box where many nodes warm at once).

The launcher and its children run at niceness FEDHAEM_NODE_COMPUTE_NICE (10): training yields
the CPU to the control plane (SuperNode, SuperLink) on a shared box.

    python -m fl_engine.deploy.prefork --runtime-api-address 127.0.0.1:9094 --insecure
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from fl_engine.deploy import flower_tuning, forking
from fl_engine.deploy import zygote as zygote_client
from fl_engine.deploy.fab_pin import pin_clientapp_fab

log = logging.getLogger("fedhaem.prefork")


def _warm_app() -> None:
    """Flower's ClientApp runtime and FedHaem's ClientApp (no torch: a node answers a run's first
    request, its column statistics, without it)."""
    import flwr.supernode.runtime.run_clientapp  # noqa: F401
    import fl_engine.federation.client_app  # noqa: F401  (warmed once in the parent, before any fork)
    # what every child would otherwise import for itself (a third of a warm child's CPU, py-spy):
    # pandas.read_parquet's pyarrow modules, the FAB's zip codec, the table fingerprint's CSV writer
    import encodings.cp437  # noqa: F401
    import pandas.io.formats.csvs  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    # and what Flower and pandas import lazily in every child (a quarter of a 50-node run's
    # ClientApp samples, py-spy): httpx's transport for the Runtime API client, and the pyarrow
    # extension types pandas registers when it first reads a parquet file
    import httpcore  # noqa: F401
    import pandas.core.arrays.arrow.extension_types  # noqa: F401
    from fl_engine.federation.protocol import PROTOCOL  # warmed in the parent, like the ClientApp above
    PROTOCOL.kind("stats")  # the survival message kinds, registered once here (the protocol loads them by name)


def _warm_torch() -> None:
    """What training needs; imported in the parent only, never after a torch operation ran there."""
    import torch  # noqa: F401
    import fl_engine.models.deepsurv  # noqa: F401  (torch.nn; FedHaem's Adam needs no torch._dynamo)


def _warm_imports() -> None:
    _warm_app()
    _warm_torch()


def _run_child(address: str, token: str, insecure: bool, certificates: bytes | None, parent: int) -> None:
    code = 1
    try:
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        pin_clientapp_fab()  # only FedHaem's installed ClientApp runs here (fab_pin's docstring)
        run_clientapp(runtime_api_address=address, token=token, insecure=insecure,
                      certificates=certificates, parent_pid=parent, runtime_dependency_install=False)
        code = 0
    except SystemExit as e:  # run_clientapp ends with flwr_exit -> sys.exit(code)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must never return into the parent's loop
        logging.getLogger("fedhaem.prefork").exception("ClientApp child failed")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# A claimed task must show life within 30 s (flwr's HEARTBEAT_DEFAULT_INTERVAL) or the SuperNode
# revokes its token; the child heartbeats once run_clientapp starts, the parent until then.
CLAIM_HEARTBEAT_S = 10.0


class ClaimKeeper:
    """Heartbeats a claimed task (its token) from a thread while this parent imports the
    ClientApp before forking the task's child. On a busy box that import took 50 s (fifty nodes
    warming at once on two cores); the SuperNode had revoked the token after 30 s without a
    heartbeat, the child's first request was refused ("task-token authentication failed") and
    the node answered the run's first message minutes late. The thread is joined before the
    fork: the parent stays single-threaded where it forks."""

    def __init__(self, address: str, token: str, insecure: bool, certificates: bytes | None,
                 every_s: float = CLAIM_HEARTBEAT_S):
        self.address, self.token, self.insecure, self.certificates = address, token, insecure, certificates
        self.every_s = every_s
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)

    def _run(self) -> None:
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=E0611
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
        from flwr.supercore.runtime import RuntimeHttpClient

        client = RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=self.insecure, root_certificates=self.certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                          RuntimeTokenHttpInterceptor(self.token)],
            retry_invoker=forking.bounded_retry_invoker(self.every_s))
        try:
            while not self._stop.wait(self.every_s):
                try:
                    if client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success:
                        self.beats += 1
                except Exception as err:  # noqa: BLE001 - the child will say what is wrong
                    log.warning("heartbeat for a claimed task failed: %s", err)
        finally:
            client.close()

    def __enter__(self) -> "ClaimKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


FAULT_SLOW_WARM_ENV = "FEDHAEM_FAULT_SLOW_WARM_S"


def _fault_slow_warm_s() -> float:
    raw = os.environ.get(FAULT_SLOW_WARM_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        raise SystemExit(f"{FAULT_SLOW_WARM_ENV}={raw!r} is not a number of seconds") from None


COMPUTE_NICE_ENV = "FEDHAEM_NODE_COMPUTE_NICE"
COMPUTE_NICE = 10


def compute_nice() -> int:
    """The niceness a node's ClientApp work runs at (FEDHAEM_NODE_COMPUTE_NICE, 0-19, default 10)."""
    raw = os.environ.get(COMPUTE_NICE_ENV, "").strip()
    try:
        value = int(raw) if raw else COMPUTE_NICE
    except ValueError:
        raise RuntimeError(f"{COMPUTE_NICE_ENV}={raw!r} is not a whole number (0-19)") from None
    if not 0 <= value <= 19:
        raise RuntimeError(f"{COMPUTE_NICE_ENV}={raw!r} must lie between 0 and 19")
    return value


def lower_priority(target: int) -> int:
    """Run this process (and the children it forks) at niceness `target` at least: a node's
    training yields the CPU to its SuperNode's Fleet connection and to the SuperLink sharing the
    box, so heartbeats and TLS handshakes are not starved when many nodes train at once.
    Absolute, so a re-executed launcher does not add it twice. Returns the niceness now."""
    now = os.getpriority(os.PRIO_PROCESS, 0)
    if target > now:
        now = os.nice(target - now)
    return now


def _release(argv: list[str]) -> None:
    """Re-execute this launcher (same pid and arguments) without its warm imports."""
    log.info("idle: re-executing to release the ClientApp's memory")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "fl_engine.deploy.prefork", *argv])


def serve(address: str, insecure: bool, root_certificates: str | None, parent_pid: int | None,
          poll_interval_s: float, secret: bytes | None = None, idle_poll_s: float = 0.0,
          release_after_s: float | None = None, argv: list[str] | None = None,
          zygote: str | None = None, in_node: bool = False) -> None:
    """Acquire ClientApp tasks forever and fork one child per task. With `zygote` (the Unix
    socket of the box's warm process, fl_engine.deploy.zygote) that process forks each task's
    child and this launcher stays lean; when it cannot, the launcher forks the task itself. Polls every
    `poll_interval_s` while children run or within 30 s of the last task, every `idle_poll_s`
    (if longer) otherwise. With `release_after_s` the parent starts lean, warms its imports after
    its first task, and re-executes itself with `argv` after that long without work; without
    it, the parent warms at once and stays warm.
    `in_node`: this loop is a thread of the SuperNode process (serve_in_supernode), with a
    `zygote`: it never forks (the SuperNode is multi-threaded) and never warms; a task the warm
    process cannot fork runs in a fresh process (task_process), signals stay the SuperNode's."""
    if in_node and zygote is None:
        raise ValueError("serve(in_node=True) needs the box's warm process (zygote)")
    niceness = os.getpriority(os.PRIO_PROCESS, 0) if in_node else lower_priority(compute_nice())
    warm = release_after_s is None or in_node  # in_node: nothing to warm, nothing to release
    if warm and not in_node:
        _warm_imports()
    if os.environ.get("FEDHAEM_FLOWER_TUNING") == "1":
        flower_tuning.apply()

    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
    interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret:
        interceptors.append(SuperExecAuthHttpInterceptor(
            master_secret=secret, protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"})))
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure, root_certificates=certificates,
        interceptors=interceptors, retry_invoker=forking.bounded_retry_invoker())
    children: set[int] = set()
    remote: dict[int, "zygote_client.RemoteChild"] = {}  # children forked by the box's warm process
    fresh: dict[int, subprocess.Popen] = {}  # in_node: tasks the warm process could not fork
    me = os.getpid()
    # poll fast while tasks come (a run's rounds), slowly once idle (flower_tuning.Activity)
    activity = flower_tuning.Activity(poll_interval_s, idle_poll_s)
    log.info("prefork launcher %d serving %s (poll %.3f s, %.3f s when idle; niceness %d)", me, address,
             poll_interval_s, max(poll_interval_s, idle_poll_s), niceness)

    def _stop(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in remote.values():
            child.kill()
        raise SystemExit(0)

    if not in_node:  # in the SuperNode, its own handlers stop it (the warm process then stops our children)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    held_seen = False
    while True:
        forking.reap(children, "ClientApp", log, quiet_success=True)
        for pid, child in list(remote.items()):
            if child.poll():
                del remote[pid]
                if child.code:
                    log.warning("ClientApp child %d (box warm process) exited with code %d", pid, child.code)
        for pid, proc in list(fresh.items()):
            if proc.poll() is not None:
                del fresh[pid]
                if proc.returncode:
                    log.warning("ClientApp process %d exited with code %d", pid, proc.returncode)
        if children or remote or fresh:  # busy until the last child has exited: idle time counts from then
            activity.mark()
        if parent_pid is not None and not forking.alive(parent_pid):
            log.info("SuperNode %d is gone; exiting", parent_pid)
            _stop(None, None)
        asked = time.monotonic()
        try:
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        except Exception as err:  # SuperNode restarting: keep trying
            log.warning("AcquireTask failed: %s", err)
            time.sleep(max(poll_interval_s, 0.5))
            continue
        if res.HasField("task") and res.token:
            if zygote is not None:
                try:
                    child = zygote_client.spawn(zygote, address, res.token, insecure, certificates,
                                                res.task.task_id)
                except (OSError, ValueError) as err:
                    if in_node:
                        proc = task_process(address, res.token, insecure, root_certificates)
                        fresh[proc.pid] = proc
                        activity.mark()
                        log.warning("the box's warm process at %s did not fork task %s (%s): task -> "
                                    "fresh process %d", zygote, res.task.task_id, err, proc.pid)
                        continue
                    log.warning("the box's warm process at %s did not fork task %s (%s): forking it here",
                                zygote, res.task.task_id, err)
                else:
                    remote[child.pid] = child
                    activity.mark()
                    log.info("task %s (run %s) -> child %d (box warm process)", res.task.task_id,
                             res.task.run_id, child.pid)
                    continue
            if not warm:
                # A run's first task after an idle spell is its stats request: import the app here
                # and fork a child that has nothing left to import, then load torch in this parent
                # while the child answers (the training tasks that follow fork from it warm).
                t = time.monotonic()
                with ClaimKeeper(address, res.token, insecure, certificates) as claim:
                    _warm_app()
                    time.sleep(_fault_slow_warm_s())
                log.info("ClientApp loaded in %.2f s (%d heartbeats for the claimed task)",
                         time.monotonic() - t, claim.beats)
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _run_child(address, res.token, insecure, certificates, me)
            children.add(pid)
            activity.mark()
            log.info("task %s (run %s) -> child %d", res.task.task_id, res.task.run_id, pid)
            if not warm:  # after the fork: the child already has the app, this parent adds torch
                t = time.monotonic()
                _warm_torch()
                log.info("torch loaded in %.2f s", time.monotonic() - t)
                warm = True
            continue  # there may be more queued tasks
        if (warm and release_after_s is not None and not children and not remote
                and time.monotonic() - activity.last > release_after_s):
            _release(argv or [])
        if not flower_tuning.held_answer(asked):
            time.sleep(activity.poll_s() if not (children or remote or fresh) else poll_interval_s)
        elif not held_seen:  # a tuned SuperNode held it: it answers when a task comes
            held_seen = True
            log.info("the SuperNode holds AcquireTask until a task comes: no idle polling")


def task_process(address: str, token: str, insecure: bool, root_certificates: str | None) -> subprocess.Popen:
    """One claimed task in a fresh process (`--one-task`): the child path of this module (FAB pin,
    Flower's run_clientapp) in a new interpreter that heartbeats the claim while it imports. The
    token goes through a pipe, not the command line (which every user of the machine can read).
    It exits with this process (--parent-pid)."""
    args = [sys.executable, "-m", "fl_engine.deploy.prefork", "--one-task", "--runtime-api-address", address,
            "--parent-pid", str(os.getpid())]
    if insecure:
        args.append("--insecure")
    if root_certificates:
        args += ["--root-certificates", str(root_certificates)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    try:
        proc.stdin.write(token.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died at once: its exit code is reaped and logged
    return proc


def _one_task(address: str, insecure: bool, root_certificates: str | None, parent_pid: int | None) -> None:
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    token = sys.stdin.read().strip()
    if not token:
        raise SystemExit("--one-task: no task token on stdin")
    lower_priority(compute_nice())  # a node's ClientApp work, as in the launcher's children
    certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
    with ClaimKeeper(address, token, insecure, certificates):
        _warm_app()
    if os.environ.get("FEDHAEM_FLOWER_TUNING") == "1":
        flower_tuning.apply()
    _run_child(address, token, insecure, certificates, parent_pid)


def serve_in_supernode(address: str, zygote: str, poll_interval_s: float, idle_poll_s: float,
                       ready_timeout_s: float = 120.0) -> threading.Thread:
    """Claim this SuperNode's ClientApp tasks from a thread of the SuperNode process itself and
    hand each to the box's warm process (fl_engine.deploy.zygote): a node is then one process
    that imports Flower instead of two (a lean launcher alone is ~100 MB resident, 83 MB of it
    `import flwr`). The loop waits for the SuperNode's Runtime API to listen. If it fails, it
    stops the SuperNode (SIGTERM) rather than leave a node that takes no task."""
    fed = logging.getLogger("fedhaem")
    if not fed.handlers:  # the SuperNode configures Flower's logger only: ours go to its stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        fed.addHandler(handler)
        fed.setLevel(logging.INFO)
        fed.propagate = False
    host, port = address.rsplit(":", 1)

    def run() -> None:
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                try:
                    socket.create_connection((host, int(port)), timeout=1.0).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the SuperNode's Runtime API at {address} is not listening "
                                           f"after {ready_timeout_s:g} s") from None
                    time.sleep(0.1)
            log.info("claiming this SuperNode's tasks in its own process; the box's warm process at %s "
                     "forks them", zygote)
            serve(address, True, None, None, poll_interval_s, idle_poll_s=idle_poll_s, zygote=zygote,
                  in_node=True)
        except BaseException:  # noqa: BLE001 - a node that takes no task must not look alive
            log.exception("the SuperNode's task claims stopped: stopping the SuperNode")
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=run, name="fedhaem-claims", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="FedHaem prefork ClientApp launcher (SuperExec stand-in)")
    p.add_argument("--runtime-api-address", required=True, help="SuperNode Runtime API host:port")
    p.add_argument("--insecure", action="store_true", help="Runtime API without TLS (loopback)")
    p.add_argument("--root-certificates", default=None, help="CA of the Runtime API certificate")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    p.add_argument("--poll-interval", type=float, default=0.1, help="seconds between AcquireTask polls")
    p.add_argument("--idle-poll-interval", type=float, default=None,
                   help="seconds between polls once idle for 30 s (default: FEDHAEM_FLOWER_IDLE_POLL_S or 2)")
    p.add_argument("--release-after", type=float, default=300.0,
                   help="seconds without work after which an idle launcher re-executes itself lean; "
                        "0: import everything at start and stay warm")
    p.add_argument("--superexec-auth-secret-file", default=None)
    p.add_argument("--zygote", default=None,
                   help="Unix socket of the box's warm process (fl_engine.deploy.zygote): it forks this "
                        "node's ClientApps, this launcher stays lean")
    p.add_argument("--one-task", action="store_true",
                   help="run the one task whose token comes on stdin, then exit (task_process)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if a.one_task:
        _one_task(a.runtime_api_address, a.insecure, a.root_certificates, a.parent_pid)
        return
    secret = open(a.superexec_auth_secret_file, "rb").read() if a.superexec_auth_secret_file else None
    idle = a.idle_poll_interval if a.idle_poll_interval is not None else flower_tuning.idle_poll_s()
    serve(a.runtime_api_address, a.insecure, a.root_certificates, a.parent_pid, a.poll_interval, secret, idle,
          release_after_s=a.release_after or None, argv=list(sys.argv[1:] if argv is None else argv),
          zygote=a.zygote)


if __name__ == "__main__":
    main()
