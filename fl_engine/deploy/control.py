"""Runs and nodes through Flower's Control API, by calling the ``flwr`` CLI with ``--format json``
(Flower 1.42 has no public Python API for runs). The portal's Flower adapter calls only these.

Every function takes the SuperLink address (host:port; Control shares the one SuperLink port and
must stay on loopback: open-source Flower does not authenticate it), the CA certificate of the
SuperLink and a FLWR_HOME folder where the CLI's connection config (``config.toml``) is written.
Run and node ids are unsigned 64-bit integers: they are returned as strings.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fl_engine.deploy.processes import VENV_BIN, flower_env, superlink_up
from fl_engine.federation.config import as_run_config
from fl_engine.federation.contract import to_flower

CONNECTION = "fedhaem"


class ControlError(RuntimeError):
    """A flwr CLI call failed; the message holds the command and Flower's own words."""


class KeyAlreadyRegistered(ControlError):
    """`register_node` was given a public key the SuperLink already holds (registering twice is
    harmless: the SuperNode can connect)."""


@dataclass(frozen=True)
class Connection:
    """Where the Control API is and how to trust it."""

    address: str
    root_certificates: str | Path | None
    flwr_home: str | Path

    def env(self) -> dict:
        home = Path(self.flwr_home)
        home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "{self.address}"']
        if self.root_certificates:
            lines.append(f'root-certificates = "{Path(self.root_certificates).resolve()}"')
        else:
            lines.append("insecure = true")
        text = "\n".join(lines) + "\n"
        cfg = home / "config.toml"
        if not cfg.exists() or cfg.read_text() != text:
            cfg.write_text(text)
        return flower_env(home)


def connection(superlink_control_address: str, root_certificates: str | Path | None = None,
               flwr_home: str | Path | None = None) -> Connection:
    """A Connection; flwr_home defaults to <tmp>/fedhaem-flwr-<port>."""
    if flwr_home is None:
        flwr_home = Path(tempfile.gettempdir()) / f"fedhaem-flwr-{superlink_control_address.rsplit(':', 1)[-1]}"
    return Connection(superlink_control_address, root_certificates, flwr_home)


def _flwr(conn: Connection, args: list[str], timeout: float = 120, want_json: bool = True):
    cmd = [str(VENV_BIN / "flwr"), *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=conn.env(), timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise ControlError(f"`{' '.join(cmd)}` did not answer within {timeout:g} s") from err
    if not want_json:
        if p.returncode != 0:
            raise ControlError(f"`{' '.join(cmd)}` failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-1500:]}")
        return p.stdout
    data = _last_json(p.stdout)
    if data is None:
        raise ControlError(f"`{' '.join(cmd)}` (exit {p.returncode}) printed no JSON: "
                           f"{(p.stdout + p.stderr).strip()[-1500:]}")
    if p.returncode != 0 or data.get("success") is False:
        reason = data.get("error-message") or data.get("error") or data
        raise ControlError(f"`{' '.join(cmd[:3])}` failed: {reason}")
    return data


def _last_json(text: str) -> dict | None:
    text = text.strip()
    start = text.find("{")
    while start != -1:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def start_run(app_dir: str | Path, run_config: dict, superlink_control_address: str, *,
              root_certificates: str | Path | None = None, flwr_home: str | Path | None = None,
              timeout: float = 180, in_process: bool = True) -> str:
    """Submit a run of the Flower app in `app_dir`; `run_config` is the run's nested contract
    (flat settings or a RunConfig also do). It is validated here, with our message, before
    Flower sees it, and crosses Flower as its one `contract` value. Returns Flower's run id.

    By default the StartRun request goes from this process, with the app bundle (FAB) built once
    per content of `app_dir` (`app_bundle`), the way ``flwr run`` builds and sends it; a ``flwr``
    CLI process costs ~1.5 s of CPU to start and rebuilds the bundle each time
    (`in_process=False`: the CLI itself)."""
    flower_config = to_flower(as_run_config(run_config).to_contract())
    if in_process:
        return _start_run_in_process(app_dir, flower_config, superlink_control_address, root_certificates)
    conn = connection(superlink_control_address, root_certificates, flwr_home)
    import tomli_w
    with tempfile.NamedTemporaryFile("wb", suffix=".toml", delete=False) as f:
        tomli_w.dump(flower_config, f)
        cfg_path = f.name
    try:
        data = _flwr(conn, ["run", str(Path(app_dir).resolve()), CONNECTION,
                            "--run-config", cfg_path, "--format", "json"], timeout)
    finally:
        os.unlink(cfg_path)
    run_id = data.get("run-id") or data.get("run_id")
    if run_id is None:
        raise ControlError(f"flwr run returned no run id: {data}")
    return str(run_id)


_BUNDLES: dict[tuple, tuple[bytes, str, str, str]] = {}


def app_bundle(app_dir: str | Path) -> tuple[bytes, str, str, str]:
    """(FAB bytes, sha256, fab id, fab version) of the Flower app in `app_dir`, built as
    ``flwr run`` builds it (flwr.cli.build, pinned to flwr 1.42) once per content of the folder:
    the cache key is every file's path, size and modification time, so an edited app is rebuilt."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate
    from flwr.common.config import get_metadata_from_config
    from flwr.common.constant import FAB_CONFIG_FILE

    app = Path(app_dir).expanduser().resolve()
    key = (str(app), tuple(sorted((str(p.relative_to(app)), p.stat().st_size, p.stat().st_mtime_ns)
                                  for p in app.rglob("*") if p.is_file())))
    if key not in _BUNDLES:
        config, _warnings = load_and_validate(app / FAB_CONFIG_FILE)
        if not config:
            raise ControlError(f"{app / FAB_CONFIG_FILE}: not a valid Flower app configuration")
        fab = build_fab_from_disk(app)
        _BUNDLES[key] = (fab, hashlib.sha256(fab).hexdigest(), *get_metadata_from_config(config))
    return _BUNDLES[key]


def _start_run_in_process(app_dir: str | Path, flower_config: dict, address: str,
                          root_certificates: str | Path | None) -> str:
    # flwr 1.42's `flwr run` (cli/run/run.py _run_with_control_api), without the CLI process:
    # the same request with the same bundle and the run config flattened as the CLI flattens a
    # TOML file (parse_config_args -> flatten_dict).
    from flwr.common.config import flatten_dict
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
    from flwr.supercore.fab import Fab

    fab_bytes, fab_hash, _fab_id, _fab_version = app_bundle(app_dir)
    req = StartRunRequest(fab=fab_to_proto(Fab(fab_hash, fab_bytes, {})),
                          override_config=user_config_to_proto(flatten_dict(flower_config)),
                          federation="", app_spec="")
    client = _control_client(address, root_certificates)
    try:
        res = client.StartRun(req)
    except Exception as err:
        raise ControlError(f"StartRun at {address} failed: {err!r}") from err
    finally:
        client.close()
    if not res.HasField("run_id"):
        raise ControlError(f"StartRun at {address} returned no run id"
                           + (f": {res.note}" if res.HasField("note") else ""))
    return str(res.run_id)


def _control_client(address: str, root_certificates: str | Path | None):
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    certificates = Path(root_certificates).read_bytes() if root_certificates else None
    try:
        return ControlHttpClient.from_server_address(
            server_address=address, insecure=certificates is None, root_certificates=certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")])
    except Exception as err:
        raise ControlError(f"Control API at {address}: {err}") from err


def run_status(run_id: str, superlink_control_address: str, *, root_certificates: str | Path | None = None,
               flwr_home: str | Path | None = None, in_process: bool = True) -> dict:
    """{"run_id", "status" (e.g. "running", "finished:completed", "finished:stopped",
    "finished:failed"), "finished" (bool), "raw": Flower's record}. Asked from this process
    like list_runs (a `flwr ls` CLI per poll costs ~1.5 s of CPU); `in_process=False`: the CLI."""
    if in_process:
        runs = _one_run_in_process(superlink_control_address, root_certificates, run_id)
    else:
        conn = connection(superlink_control_address, root_certificates, flwr_home)
        runs = _flwr(conn, ["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], 60).get("runs") or []
    rec = next((r for r in runs if str(r.get("run-id")) == str(run_id)), None)
    if rec is None:
        raise ControlError(f"run {run_id} not found on {superlink_control_address}")
    status = str(rec.get("status", ""))
    return {"run_id": str(run_id), "status": status, "finished": status.startswith("finished"), "raw": rec}


def list_runs(superlink_control_address: str, *, root_certificates: str | Path | None = None,
              flwr_home: str | Path | None = None, in_process: bool = True) -> list[dict]:
    """Flower's records of all runs (run ids as strings), in the JSON rows of ``flwr ls``.

    The portal's reconciler asks every few seconds, and a ``flwr`` CLI process costs ~1.5 s of
    CPU to start; so by default the same ListRuns request goes from this process through the
    CLI's own HTTP client and row formatting (`in_process=False`: the CLI itself)."""
    if not in_process:
        conn = connection(superlink_control_address, root_certificates, flwr_home)
        runs = _flwr(conn, ["ls", CONNECTION, "--format", "json"], 60).get("runs") or []
    else:
        runs = _list_runs_in_process(superlink_control_address, root_certificates)
    for r in runs:
        r["run-id"] = str(r.get("run-id"))
    return runs


def _one_run_in_process(address: str, root_certificates: str | Path | None, run_id: str) -> list[dict]:
    try:
        rid = int(str(run_id))
    except ValueError:
        raise ControlError(f"run id {run_id!r} is not a Flower run id (a whole number)") from None
    return _ls_in_process(address, root_certificates, lambda ls, client: ls._display_one_run(client, rid),
                          f"run {run_id} on {address}")


def _list_runs_in_process(address: str, root_certificates: str | Path | None) -> list[dict]:
    return _ls_in_process(address, root_certificates, lambda ls, client: ls._list_runs(client),
                          f"ListRuns at {address} failed")


def _ls_in_process(address: str, root_certificates: str | Path | None, rows, what: str) -> list[dict]:
    """The JSON rows of `flwr ls` for `rows(flwr.cli.ls, client)`, asked from this process."""
    # flwr 1.42's CLI internals (ls._list_runs / _display_one_run / _to_json): pinned like the
    # rest of this adapter
    from flwr.cli import ls as flwr_ls

    client = _control_client(address, root_certificates)
    try:
        return json.loads(flwr_ls._to_json(rows(flwr_ls, client))).get("runs") or []
    except (SystemExit, Exception) as err:  # the CLI's error handler exits; keep Flower's words
        raise ControlError(f"{what}: {err!r}") from err
    finally:
        client.close()


def stop_run(run_id: str, superlink_control_address: str, *, root_certificates: str | Path | None = None,
             flwr_home: str | Path | None = None) -> dict:
    """Ask the SuperLink to stop a run; returns Flower's JSON answer."""
    conn = connection(superlink_control_address, root_certificates, flwr_home)
    return _flwr(conn, ["stop", str(run_id), CONNECTION, "--format", "json"], 60)


def run_logs(run_id: str, superlink_control_address: str, *, root_certificates: str | Path | None = None,
             flwr_home: str | Path | None = None) -> str:
    """The ServerApp log of a run so far (text)."""
    conn = connection(superlink_control_address, root_certificates, flwr_home)
    return _flwr(conn, ["log", str(run_id), CONNECTION, "--show"], 60, want_json=False)


def register_node(public_key: str | Path, superlink_control_address: str, *, name: str | None = None,
                  root_certificates: str | Path | None = None, flwr_home: str | Path | None = None) -> str:
    """Register a SuperNode's public key (OpenSSH EC P-384) with the SuperLink; returns the
    Flower node id (string). Raises KeyAlreadyRegistered when the SuperLink holds the key."""
    conn = connection(superlink_control_address, root_certificates, flwr_home)
    args = ["supernode", "register", str(public_key), CONNECTION, "--format", "json"]
    if name:
        args += ["--name", name]
    try:
        data = _flwr(conn, args, 60)
    except ControlError as err:
        if "Public key already in use" in str(err):
            raise KeyAlreadyRegistered(str(err)) from err
        raise
    node_id = data.get("node-id") or data.get("node_id")
    if node_id is None:
        raise ControlError(f"flwr supernode register returned no node id: {data}")
    return str(node_id)


def unregister_node(node_id: str, superlink_control_address: str, *,
                    root_certificates: str | Path | None = None, flwr_home: str | Path | None = None) -> dict:
    """Unregister a SuperNode (it can no longer connect); returns Flower's JSON answer."""
    conn = connection(superlink_control_address, root_certificates, flwr_home)
    return _flwr(conn, ["supernode", "unregister", str(node_id), CONNECTION, "--format", "json"], 60)


def list_nodes(superlink_control_address: str, *, root_certificates: str | Path | None = None,
               flwr_home: str | Path | None = None) -> list[dict]:
    """Registered SuperNodes with their status ("online", "offline", "registered", ...); node
    ids as strings."""
    conn = connection(superlink_control_address, root_certificates, flwr_home)
    nodes = _flwr(conn, ["supernode", "list", CONNECTION, "--format", "json"], 60).get("nodes") or []
    for n in nodes:
        n["node-id"] = str(n.get("node-id"))
    return nodes


def health(superlink_control_address: str, *, root_certificates: str | Path | None = None,
           flwr_home: str | Path | None = None) -> dict:
    """{"superlink_up": bool, "nodes": list_nodes(...) or [], "online": [node ids], "error": str|None}."""
    out = {"superlink_up": superlink_up(superlink_control_address, root_certificates),
           "nodes": [], "online": [], "error": None}
    if not out["superlink_up"]:
        out["error"] = f"no TLS endpoint answers on {superlink_control_address}"
        return out
    try:
        out["nodes"] = list_nodes(superlink_control_address, root_certificates=root_certificates,
                                  flwr_home=flwr_home)
    except ControlError as err:
        out["error"] = str(err)
    out["online"] = [n["node-id"] for n in out["nodes"] if n.get("status") == "online"]
    return out
