"""Start and stop the Flower processes of a federation: the SuperLink (manager) and one
SuperNode per hospital, each in its own process group with its log in a file.

Facts about Flower 1.42 this relies on: the SuperLink serves Fleet, Control and Runtime APIs on
one HTTP port (bound here to 127.0.0.1: the Control API has no authentication in open-source
Flower); it spawns ``flower-superexec`` / ``flwr-serverapp`` / ``flwr-clientapp`` by name, so the
venv's bin goes first on PATH; each SuperNode needs its own Runtime API ``--port``. The same fact
lets the SuperLink spawn FedHaem's warm ServerApp launcher (fl_engine.deploy.serverapp_prefork)
in place of Flower's SuperExec: a directory whose ``flower-superexec`` runs it goes before the venv.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fl_engine.deploy import flower_tuning
from fl_engine.deploy.pki import Pki

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TELEMETRY_ENV = "FLWR_TELEMETRY_ENABLED"  # read by Flower when it is imported


def flower_env(flwr_home: str | Path | None = None, extra: dict | None = None) -> dict:
    """Environment for Flower processes: venv bin first on PATH, FLWR_HOME, one BLAS thread, and
    Flower's usage telemetry off (FLWR_TELEMETRY_ENABLED=0, Flower's own switch) unless the
    operator set it: a hospital's machines call nothing outside the federation, and each ClientApp
    run no longer starts a thread that loads the system's CA store to post an event (a fifth of
    the box's ClientApp CPU in a 50-node run's first phase, py-spy, bench/README §8)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if flwr_home:
        env["FLWR_HOME"] = str(flwr_home)
    env.setdefault(TELEMETRY_ENV, "0")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class ManagedProcess:
    """A child process in its own session (process group); `stop` ends the whole group."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    env: dict | None = None
    cwd: str | Path | None = None
    niceness: int = 0  # at least this niceness (0: as this process)

    @classmethod
    def start(cls, name: str, args: list[str], log_path: str | Path, env: dict,
              cwd: str | Path | None = None, niceness: int = 0) -> "ManagedProcess":
        proc = cls(name, list(args), Path(log_path), env=env, cwd=cwd, niceness=niceness)
        proc.launch()
        return proc

    def launch(self) -> None:
        """(Re)start the process with its arguments, environment and log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(self.args)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                          start_new_session=True)
        if self.niceness > os.getpriority(os.PRIO_PROCESS, 0):
            # raising a child's niceness needs no privilege; on Linux niceness is per thread, and this
            # reaches the main thread while its interpreter is still starting (before any thread)
            try:
                os.setpriority(os.PRIO_PROCESS, self.popen.pid, self.niceness)
            except ProcessLookupError:
                pass  # exited at once: its log says why

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL what is left after `timeout`; returns the exit code."""
        if self.popen is None:
            return None
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # children that outlived the leader (e.g. ClientApp processes) share the group id
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once (simulates a crashed node)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class SuperLinkHandle:
    """A running SuperLink: its one address (Fleet + Control + Runtime APIs) and process."""

    address: str
    ca_cert: Path
    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()

    def serverapp_launcher_pids(self) -> tuple[int | None, int | None]:
        """(supervisor, warm worker) pids of the prefork ServerApp launcher the SuperLink spawned,
        None where there is none (yet), from /proc (Linux)."""
        procs = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                    procs[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
                except (OSError, IndexError, ValueError):
                    continue
        mod = b"fl_engine.deploy.serverapp_prefork"
        sup = next((pid for pid, (ppid, cmd) in procs.items()
                    if ppid == self.process.pid and mod in cmd and b"--worker" not in cmd), None)
        worker = next((pid for pid, (ppid, cmd) in procs.items()
                       if sup is not None and ppid == sup and mod in cmd and b"--worker" in cmd), None)
        return sup, worker


# how often a SuperLink's SuperExec asks for a ServerApp to launch, as the portal deploys it: once
# per run start, so a slower poll costs at most this much at the start of a run and saves the idle
# SuperLink ~15% of a core over 0.1 s (3 idle nodes, process CPU: 16.4% + 6.3% -> 6.2% + 1.5% at 1 s)
SERVERAPP_POLL_S = 0.5

# "prefork": FedHaem's warm ServerApp launcher; "flower": Flower's SuperExec (a fresh
# flwr-serverapp process per run). Default when start_superlink is not told: this variable.
SERVERAPP_LAUNCHER_ENV = "FEDHAEM_SERVERAPP_PREFORK"
SERVERAPP_LAUNCHERS = ("prefork", "flower")


def serverapp_launcher_default() -> str:
    """The ServerApp launcher FEDHAEM_SERVERAPP_PREFORK asks for: "1" prefork, "0" or unset flower."""
    raw = os.environ.get(SERVERAPP_LAUNCHER_ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise RuntimeError(f"{SERVERAPP_LAUNCHER_ENV}={raw!r} must be 1 (prefork) or 0 (Flower's SuperExec)")
    return "prefork" if raw == "1" else "flower"


def serverapp_launcher_bin(directory: str | Path) -> Path:
    """A directory holding a ``flower-superexec`` that runs fl_engine.deploy.serverapp_prefork
    with the SuperLink's arguments; put first on the SuperLink's PATH."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "flower-superexec"
    text = f'#!/bin/sh\nexec "{sys.executable}" -m fl_engine.deploy.serverapp_prefork "$@"\n'
    if not shim.exists() or shim.read_text() != text:
        tmp = shim.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(shim)
    return directory


def start_superlink(pki: Pki, log_dir: str | Path, port: int | None = None,
                    database: str | Path | None = None, flwr_home: str | Path | None = None,
                    poll_interval_s: float | None = 0.1, tuning: bool = False,
                    wait_s: float = 30.0, events_key_file: str | Path | None = None,
                    serverapp_launcher: str | None = None) -> SuperLinkHandle:
    """Start a SuperLink on 127.0.0.1:`port` with TLS and SuperNode authentication.

    `database`: SQLite file for runs and nodes (None = in memory). `poll_interval_s` sets
    FLWR_SUPEREXEC_TASK_POLL_INTERVAL for the SuperExec that launches ServerApps (None = Flower's 1 s).
    `tuning`: the SuperLink holds idle Fleet pulls until a message comes and the ServerApp
    applies the shorter pull back-off (fl_engine.deploy.flower_tuning; off by default).
    `events_key_file`: the key with which ServerApps sign their run events for the portal
    (fl_engine.federation.events); without it the portal replays events from the run's log.
    `serverapp_launcher`: "prefork" (fl_engine.deploy.serverapp_prefork: ServerApps forked from a
    warm process, ~2 s less per run start) or "flower" (Flower's SuperExec); None: the
    FEDHAEM_SERVERAPP_PREFORK environment variable (serverapp_launcher_default). Either way the
    SuperLink spawns, owns and stops the launcher.
    """
    launcher = serverapp_launcher or serverapp_launcher_default()
    if launcher not in SERVERAPP_LAUNCHERS:
        raise ValueError(f"serverapp_launcher must be one of {SERVERAPP_LAUNCHERS}, got {launcher!r}")
    port = port or free_port()
    log_dir = Path(log_dir)
    # tuned: Flower's SuperLink behind fl_engine.deploy.flower_tuning (held Fleet pulls)
    head = ([sys.executable, "-m", "fl_engine.deploy.flower_tuning", "superlink"] if tuning
            else [str(VENV_BIN / "flower-superlink")])
    args = [*head,
            "--ssl-ca-certfile", str(pki.ca_cert), "--ssl-certfile", str(pki.server_cert),
            "--ssl-keyfile", str(pki.server_key),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(port)]
    if database:
        args += ["--database", str(database)]
    extra = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(poll_interval_s)} if poll_interval_s else {}
    if tuning:
        extra["FEDHAEM_FLOWER_TUNING"] = "1"
    if events_key_file:
        extra["FEDHAEM_RUN_EVENTS_KEY_FILE"] = str(Path(events_key_file).resolve())
    env = flower_env(flwr_home or log_dir / "flwr-superlink", extra)
    if launcher == "prefork":
        env["PATH"] = f"{serverapp_launcher_bin(log_dir / 'serverapp-launcher-bin')}{os.pathsep}{env['PATH']}"
    proc = ManagedProcess.start("superlink", args, log_dir / "superlink.log", env)
    handle = SuperLinkHandle(f"127.0.0.1:{port}", pki.ca_cert, proc)
    try:
        wait_until(lambda: superlink_up(handle.address, pki.ca_cert), wait_s,
                   f"SuperLink on {handle.address} (log {proc.log_path})", proc)
    except Exception:
        proc.stop()
        raise
    return handle


def superlink_up(address: str, ca_cert: str | Path | None) -> bool:
    """True when a TLS handshake with the SuperLink at host:port succeeds (it is serving)."""
    host, _, port = address.rpartition(":")
    try:
        ctx = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2) as s:
            if ctx is None:
                return True
            with ctx.wrap_socket(s, server_hostname=host.strip("[]")):
                return True
    except OSError:
        return False


def wait_until(pred, timeout_s: float, what: str, proc: ManagedProcess | None = None) -> None:
    """Poll `pred` every 0.1 s; raise TimeoutError naming `what` (or RuntimeError if proc died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: process exited with code {proc.popen.returncode}:\n"
                               + proc.log_text()[-2000:])
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not ready after {timeout_s:g} s")


@dataclass
class SuperNodeHandle:
    """A running SuperNode (+ its prefork launcher when used)."""

    name: str
    runtime_port: int
    process: ManagedProcess
    launcher: ManagedProcess | None = None
    extra: list[ManagedProcess] = field(default_factory=list)

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.launcher, self.process, *self.extra) if p is not None]

    def alive(self) -> bool:
        return all(p.alive() for p in self.processes())

    def stop(self) -> None:
        for p in self.processes():
            p.stop()

    def kill(self) -> None:
        for p in self.processes():
            p.kill()

    def restart(self) -> None:
        """Stop what is left of the node's processes and start them again, same arguments (the
        prefork launcher follows the new SuperNode's pid)."""
        self.stop()
        self.process.launch()
        if self.launcher is not None:
            args = list(self.launcher.args)
            if "--parent-pid" in args:
                args[args.index("--parent-pid") + 1] = str(self.process.pid)
            self.launcher.args = args
            self.launcher.launch()
        for p in self.extra:
            p.launch()

    def node_id(self) -> str | None:
        """Flower node id (uint64, as a string) the SuperNode logged last."""
        found = None
        for line in self.process.log_text().splitlines():
            if "SuperNode ID:" in line:
                found = line.rsplit("SuperNode ID:", 1)[1].strip()
        return found


def start_supernode(name: str, superlink: str, root_certificates: str | Path | None, private_key: str | Path,
                    data_dir: str | Path, state_dir: str | Path, runtime_port: int | None = None,
                    launcher: str = "prefork", poll_interval_s: float = 0.1,
                    tuning: bool = False, node_options: dict | None = None,
                    release_after_s: float | None = None, niceness: int = 0,
                    zygote: str | Path | None = None, claims_in_node: bool = False) -> SuperNodeHandle:
    """Start a hospital's SuperNode connected to `superlink` (host:port, TLS + node auth).

    launcher: "prefork" (our `fl_engine.deploy.prefork` under ``--isolation process``: ClientApps
    forked from a warm process) or "flower" (Flower's default ``flower-superexec`` spawning a
    fresh ``flwr-clientapp`` per message). `tuning` also applies fl_engine.deploy.flower_tuning
    (shorter Flower sleeps; off by default). Logs and FLWR_HOME go under `state_dir`.
    `node_options` adds ClientApp node-config keys: "manager" and "token-file" (where the node
    fetches its approvals), or "trust-all-runs" = "true" (engine tests and benchmarks only: the
    node then serves any run without asking a manager). `niceness`: the SuperNode's (its
    launcher runs at FEDHAEM_NODE_COMPUTE_NICE at least); on a box shared with the SuperLink,
    nodes below the SuperLink's priority keep the hub answering when all of them get work at once.
    `zygote`: the Unix socket of the box's warm process (start_zygote), which then forks this
    node's ClientApps (prefork launcher only). `claims_in_node` (with `zygote` and `tuning`): no
    launcher process; the SuperNode claims its tasks in a thread of its own and hands them to the
    warm process (prefork.serve_in_supernode): one process per node imports Flower, not two.
    """
    if launcher not in ("prefork", "flower"):
        raise ValueError(f"launcher must be 'prefork' or 'flower', got {launcher!r}")
    if claims_in_node and (launcher != "prefork" or zygote is None or not tuning):
        raise ValueError("claims_in_node needs launcher='prefork', the box's warm process (zygote) and tuning=True "
                         "(the SuperNode then runs through fl_engine.deploy.flower_tuning)")
    state_dir = Path(state_dir)
    runtime_port = runtime_port or free_port()
    node_config = f'name="{name}" data-dir="{Path(data_dir).resolve()}"'
    for key, value in (node_options or {}).items():
        if value is not None and value != "":
            if '"' in str(value):
                raise ValueError(f"node option {key}: a double quote cannot pass through --node-config")
            node_config += f' {key}="{value}"'
    extra_env = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(poll_interval_s)} if poll_interval_s else {}
    if tuning:
        extra_env["FEDHAEM_FLOWER_TUNING"] = "1"
    env = flower_env(state_dir / "flwr-home", extra_env)
    if claims_in_node:
        env[flower_tuning.NODE_CLAIMS_ENV] = json.dumps({
            "address": f"127.0.0.1:{runtime_port}", "zygote": str(zygote),
            "poll_interval_s": poll_interval_s, "idle_poll_s": flower_tuning.idle_poll_s()})
    if tuning:
        head = [sys.executable, "-m", "fl_engine.deploy.flower_tuning", "supernode"]
    else:
        head = [str(VENV_BIN / "flower-supernode")]
    args = head + ["--superlink", superlink]
    if root_certificates:  # else the system CAs verify the SuperLink (TLS stays on)
        args += ["--root-certificates", str(root_certificates)]
    args += ["--auth-supernode-private-key", str(private_key),
                   "--node-config", node_config,
                   "--host", "127.0.0.1", "--port", str(runtime_port)]
    if launcher == "prefork":
        args += ["--isolation", "process"]
    proc = ManagedProcess.start(f"supernode-{name}", args, state_dir / "supernode.log", env, niceness=niceness)
    handle = SuperNodeHandle(name, runtime_port, proc)
    if launcher == "prefork" and not claims_in_node:
        largs = [sys.executable, "-m", "fl_engine.deploy.prefork",
                 "--runtime-api-address", f"127.0.0.1:{runtime_port}", "--insecure",
                 "--parent-pid", str(proc.pid), "--poll-interval", str(poll_interval_s)]
        if release_after_s is not None:
            largs += ["--release-after", str(release_after_s)]
        if zygote is not None:
            largs += ["--zygote", str(zygote)]
        handle.launcher = ManagedProcess.start(f"launcher-{name}", largs, state_dir / "launcher.log", env,
                                               niceness=niceness)
    return handle


def start_zygote(state_dir: str | Path, tuning: bool = False, timeout_s: float = 120.0,
                 release_after_s: float | None = None) -> tuple[ManagedProcess, Path]:
    """Start the box's warm process (fl_engine.deploy.zygote) under `state_dir` and wait until it
    accepts (it imports the ClientApp first); returns it and its socket path, for
    start_supernode(zygote=...). `release_after_s`: idle time after which it sheds torch (its
    default, 300 s, when None; 0 keeps it warm from the start)."""
    state_dir = Path(state_dir)
    sock = state_dir / "run" / "zygote.sock"
    extra = {"FEDHAEM_FLOWER_TUNING": "1"} if tuning else {}
    args = [sys.executable, "-m", "fl_engine.deploy.zygote", "--socket", str(sock), "--parent-pid", str(os.getpid())]
    if release_after_s is not None:
        args += ["--release-after", str(release_after_s)]
    proc = ManagedProcess.start("zygote", args, state_dir / "zygote.log", flower_env(state_dir / "flwr-home", extra))
    wait_until(sock.exists, timeout_s, "the box's warm process", proc)
    return proc, sock


def exit_when_superlink_gone(target, grace_s: float = 10.0, interval_s: float = 2.0) -> threading.Thread | None:
    """In a ServerApp: exit the process (code 1) once the SuperLink has been unreachable for
    `grace_s` seconds. `target`: "host:port" or a Flower Grid talking to the SuperLink over
    HTTP (its Runtime API address is used); anything else (an in-process test grid) is a no-op.

    Why: Flower 1.42's ServerApp retries its Runtime API calls without end (up to 20 s apart)
    while the SuperLink is gone, and only exits on its own through a chain of parent-pid
    monitors (SuperLink -> SuperExec -> ServerApp) that does not exist when the SuperLink runs
    elsewhere or its pid lingers as a zombie.
    """
    address = target if isinstance(target, str) else getattr(target, "_addr", None)
    if not isinstance(address, str) or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)

    def reachable() -> bool:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False

    def watch() -> None:
        gone_since = None
        while True:
            time.sleep(interval_s)
            if reachable():
                gone_since = None
                continue
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= grace_s:
                print(f"fedhaem: the SuperLink at {address} has been unreachable for {grace_s:g} s; "
                      "this ServerApp exits", file=sys.stderr, flush=True)
                os._exit(1)

    t = threading.Thread(target=watch, name="superlink-watchdog", daemon=True)
    t.start()
    return t
