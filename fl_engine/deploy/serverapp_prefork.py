"""ServerApp prefork launcher: a warm stand-in for the ``flower-superexec`` a SuperLink spawns to
launch ServerApps (fl_engine.deploy.prefork does the same for ClientApps next to a SuperNode).

Flower's SuperExec starts a fresh ``flwr-serverapp`` process per run, which imports Python,
flwr, FedHaem's ServerApp and (for survival runs) torch each time: ~2.5 s between a run's
submission and its ServerApp's first line. This launcher pays that once. It acquires ServerApp
tasks from the SuperLink's Runtime API exactly as SuperExec does (``AcquireTask`` with the
SuperExec version header), and ``fork()``s a child per task that runs Flower's own
``run_serverapp()`` with the task's token, as ``flwr-serverapp --token`` would. The child's
`parent_pid` is the SuperLink's, so a ServerApp still exits with its SuperLink (and FedHaem's
ServerApp keeps its own exit-when-unreachable watchdog, fl_engine.deploy.processes); a child
that dies leaves its run to Flower's task heartbeat, which fails the run as with stock Flower.

How it is started: ``start_superlink(..., serverapp_launcher="prefork")`` puts a directory
first on the SuperLink's PATH whose ``flower-superexec`` runs this module, so the SuperLink
spawns, owns and stops it exactly as it would Flower's SuperExec (it is restarted with the
SuperLink by whatever supervises that). Two processes:
- the supervisor (this module without ``--worker``; imports no flwr, ~15 MB): starts the warm
  worker and restarts it after 1, 2, 4 ... 30 s if it dies; exits (stopping the worker) once
  the SuperLink (`--parent-pid`) is gone.
- the worker (``--worker``): imports flwr's ServerApp runtime, FedHaem's ServerApp and torch
  once, then polls AcquireTask every FLWR_SUPEREXEC_TASK_POLL_INTERVAL seconds (Flower's own
  knob, the SERVERAPP_POLL_S the portal sets) and forks. A tuned SuperLink holds an empty
  AcquireTask until a run is created (fl_engine.deploy.flower_tuning): the worker then asks
  again at once instead of sleeping, so an idle manager costs one request per hold.

Fork safety: the worker stays single-threaded in Python (no Flower heartbeat, log uploader or
watchdog thread runs before a fork: those start inside each child's run_serverapp / ServerApp
main), runs no torch operation, and talks to the Runtime API over HTTP (httpx, no gRPC channel
and no threads); a child never uses the parent's HTTP client and leaves by ``os._exit``. With
OMP_NUM_THREADS=1 (flower_env) the only native thread in the parent is pyarrow's jemalloc
background thread, as in the ClientApp prefork launcher.

Uses Flower internals without patching them (pinned to flwr 1.42; tests/federation cover it).

    python -m fl_engine.deploy.serverapp_prefork --runtime-api-address 127.0.0.1:9092 \\
        --root-certificates ca.pem --parent-pid <SuperLink pid>
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from fl_engine.deploy import flower_tuning, forking

log = logging.getLogger("fedhaem.serverapp_prefork")

POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # what Flower's SuperExec reads; same bounds
BACKOFF_MAX_S = 30.0
RESET_AFTER_S = 60.0


def _poll_s() -> float:
    raw = os.environ.get(POLL_ENV, "")
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        raise SystemExit(f"{POLL_ENV}={raw!r} is not a number of seconds") from None
    if not 0.01 <= value <= 60:
        raise SystemExit(f"{POLL_ENV}={raw!r} must lie between 0.01 and 60 seconds")
    return value


def _warm_imports(torch: bool) -> None:
    """Flower's ServerApp runtime, FedHaem's ServerApp (as the FAB names it) and torch."""
    import flwr.superlink.runtime.run_serverapp  # noqa: F401
    import fl_engine.federation.server_app  # noqa: F401  (load_app reuses the module in sys.modules)
    if torch:
        import torch  # noqa: F401  (imported only: no torch operation runs before a fork)


def _run_child(address: str, token: str, insecure: bool, certificates: bytes | None,
               superlink_pid: int | None) -> None:
    """In the forked child: what ``flwr-serverapp --token`` does, then leave by os._exit."""
    code = 1
    try:
        from queue import Queue

        from flwr.supercore.logger import mirror_output_to_queue
        from flwr.superlink.runtime.run_serverapp import run_serverapp

        log_queue: Queue = Queue()
        mirror_output_to_queue(log_queue)  # the run's log (flwr log), as flwr_serverapp() does
        run_serverapp(runtime_api_address=address, log_queue=log_queue, token=token, insecure=insecure,
                      certificates=certificates, parent_pid=superlink_pid, runtime_dependency_install=False)
        code = 0
    except SystemExit as e:  # run_serverapp ends with flwr_exit -> sys.exit(code)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must never return into the parent's loop
        logging.getLogger("fedhaem.serverapp_prefork").exception("ServerApp child failed")
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(address: str, insecure: bool, root_certificates: str | None, parent_pid: int | None,
          superlink_pid: int | None, poll_s: float, torch: bool = True) -> None:
    """Worker: warm imports, then acquire ServerApp tasks forever and fork one child per task."""
    t = time.monotonic()
    _warm_imports(torch)
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure, root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=forking.bounded_retry_invoker())
    children: set[int] = set()
    log.info("ServerApp launcher worker %d warm in %.2f s, serving %s (poll %.3f s)", os.getpid(),
             time.monotonic() - t, address, poll_s)

    def _stop(signum, _frame):
        for pid in children:  # running ServerApps end as they would with Flower's SuperExec
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    request = AcquireTaskRequest(supported_task_types=[TaskType.SERVER_APP])
    held_seen = False
    while True:
        forking.reap(children, "ServerApp", log)
        if parent_pid is not None and not forking.alive(parent_pid):
            log.info("supervisor %d is gone; exiting", parent_pid)
            _stop(None, None)
        asked = time.monotonic()
        try:
            res = client.AcquireTask(request)
        except Exception as err:  # SuperLink restarting: keep trying
            log.warning("AcquireTask failed: %s", err)
            time.sleep(max(poll_s, 0.5))
            continue
        if res.HasField("task") and res.token:
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _run_child(address, res.token, insecure, certificates, superlink_pid)
            children.add(pid)
            log.info("task %s (run %s) -> ServerApp child %d", res.task.task_id, res.task.run_id, pid)
            continue  # another run may be waiting
        if not flower_tuning.held_answer(asked):
            time.sleep(poll_s)
        elif not held_seen:  # a tuned SuperLink held it: it answers when a run comes
            held_seen = True
            log.info("the SuperLink holds AcquireTask until a run comes: no idle polling")


def supervise(worker_args: list[str], parent_pid: int | None, backoff_max_s: float = BACKOFF_MAX_S) -> None:
    """Supervisor: keep one worker running (restarts after 1, 2, 4 ... `backoff_max_s` s, back to
    1 s once a worker stayed up RESET_AFTER_S); stop it and exit when `parent_pid` is gone."""
    me = os.getpid()
    argv = [sys.executable, "-m", "fl_engine.deploy.serverapp_prefork", "--worker", *worker_args,
            "--parent-pid", str(me)]
    if parent_pid is not None:
        argv += ["--superlink-pid", str(parent_pid)]
    worker: subprocess.Popen | None = None
    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    restarts, started, restart_at = 0, 0.0, 0.0
    while not stopping:
        now = time.monotonic()
        if parent_pid is not None and not forking.alive(parent_pid):
            log.info("SuperLink %d is gone; exiting", parent_pid)
            break
        if worker is not None and worker.poll() is not None:
            restarts = 1 if now - started >= RESET_AFTER_S else restarts + 1
            wait = min(backoff_max_s, 2.0 ** (restarts - 1))
            log.warning("ServerApp launcher worker %d exited with code %s; restarting in %g s",
                        worker.pid, worker.returncode, wait)
            worker, restart_at = None, now + wait
        if worker is None and now >= restart_at:
            worker = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            started = now
            log.info("ServerApp launcher worker started, pid %d", worker.pid)
        time.sleep(0.2)
    if worker is not None and worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="FedHaem prefork ServerApp launcher (SuperExec stand-in)")
    p.add_argument("--runtime-api-address", required=True, help="SuperLink Runtime API host:port")
    p.add_argument("--insecure", action="store_true", help="Runtime API without TLS")
    p.add_argument("--root-certificates", default=None, help="CA of the Runtime API certificate")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    p.add_argument("--worker", action="store_true", help="the warm worker (else: its supervisor)")
    p.add_argument("--superlink-pid", type=int, default=None, help="worker: the ServerApps' parent pid")
    p.add_argument("--no-torch", dest="torch", action="store_false", help="worker: do not pre-import torch")
    # flower-superexec arguments the SuperLink may pass that mean nothing here
    p.add_argument("--allow-runtime-dependency-installation", action="store_true", help=argparse.SUPPRESS)
    a, unknown = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if unknown:
        log.warning("ignoring flower-superexec arguments %s", unknown)
    if a.allow_runtime_dependency_installation:
        log.warning("runtime dependency installation is not supported by the prefork launcher; ignored")
    if a.worker:
        serve(a.runtime_api_address, a.insecure, a.root_certificates, a.parent_pid, a.superlink_pid,
              _poll_s(), torch=a.torch)
        return
    wargs = ["--runtime-api-address", a.runtime_api_address]
    if a.insecure:
        wargs.append("--insecure")
    if a.root_certificates:
        wargs += ["--root-certificates", a.root_certificates]
    if not a.torch:
        wargs.append("--no-torch")
    supervise(wargs, a.parent_pid)


if __name__ == "__main__":
    main()
