"""The portal's ONE door to Flower: every SuperLink and run operation goes through here, and
from here through `fl_engine.deploy.control` (the `flwr` CLI with JSON output). The Control API
address is loopback / internal only; hospitals and browsers never reach it."""
from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from fl_engine.deploy import control
from fl_engine.deploy.processes import superlink_up
from portal.audit.services import record
from portal.nodes.models import WorkerNode

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parents[2] / "fl_engine" / "federation" / "app"


class FlowerUnavailable(RuntimeError):
    """The SuperLink cannot be reached or refused the operation."""


def _ca() -> Path | None:
    ca = Path(settings.FLOWER_CA_CERT) if settings.FLOWER_CA_CERT else Path(settings.FLOWER_PKI_DIR) / "ca.crt"
    return ca if ca.exists() else None


def _conn() -> dict:
    return {"root_certificates": _ca(), "flwr_home": Path(settings.VAR_DIR) / "flwr-home"}


def superlink_health() -> dict:
    address = settings.FLOWER_CONTROL_ADDRESS
    if not superlink_up(address, _ca()):
        return {"status": "down", "address": address}
    try:
        nodes = control.list_nodes(address, **_conn())
    except control.ControlError as exc:
        return {"status": "error", "address": address, "error": str(exc)[:300]}
    online = [n for n in nodes if str(n.get("status", "")).lower() == "online"]
    return {"status": "ok", "address": address, "nodes_registered": len(nodes), "nodes_online": len(online)}


def sync_node_key(node_id: int) -> None:
    """Make the SuperLink match the portal for one node. Approved: register its public key and
    keep the Flower node id the SuperLink returns (the node's identity from then on). Revoked:
    unregister exactly that id; Flower then retires the key for good (a re-approved node comes
    back with a new key). Failures are logged: the health page shows them."""
    node = WorkerNode.objects.get(pk=node_id)
    address = settings.FLOWER_CONTROL_ADDRESS
    try:
        if node.status == WorkerNode.Status.APPROVED and not node.key_retired:
            flower_id = control.register_node(_key_file(node), address, name=node.name, **_conn())
            WorkerNode.objects.filter(pk=node.pk).update(flower_node_id=str(flower_id))
            record(None, "node.key_registered", node, {"flower_node_id": str(flower_id)})
        elif node.status == WorkerNode.Status.REVOKED and node.flower_node_id:
            control.unregister_node(node.flower_node_id, address, **_conn())
            WorkerNode.objects.filter(pk=node.pk).update(flower_node_id="", key_retired=True)
            record(None, "node.key_unregistered", node, {"flower_node_id": node.flower_node_id})
    except control.KeyAlreadyRegistered:
        # approval's task and a direct call may both register the key: the first one won
        if node.flower_node_id:
            log.info("node %s: public key already registered with the SuperLink", node.name)
        else:
            log.warning("node %s: the SuperLink holds its key under an id the portal never learnt; "
                        "replace the node's key to give it an identity", node.name)
    except (control.ControlError, OSError) as exc:
        log.warning("SuperLink key sync for node %s failed: %s", node.name, exc)


def _key_file(node) -> Path:
    path = Path(settings.VAR_DIR) / "node-keys" / f"{node.name}.pub"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(openssh_public_key(node.public_key) + "\n")
    return path


def openssh_public_key(text: str) -> str:
    """A PEM or OpenSSH public key in the OpenSSH form `flwr supernode register` reads."""
    from cryptography.hazmat.primitives import serialization

    raw = text.strip().encode()
    if not raw.startswith(b"-----"):
        return text.strip()
    key = serialization.load_pem_public_key(raw)
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _control(fn_name: str, *args):
    """Call one `fl_engine.deploy.control` function against the SuperLink; FlowerUnavailable on failure."""
    try:
        return getattr(control, fn_name)(*args, settings.FLOWER_CONTROL_ADDRESS, **_conn())
    except control.ControlError as exc:
        raise FlowerUnavailable(str(exc)) from exc


def start_run(run_config: dict) -> str:
    """Submit the FedHaem Flower app with `run_config`; returns Flower's run id (a string)."""
    return _control("start_run", APP_DIR, run_config)


def run_status(flower_run_id: str) -> dict:
    return _control("run_status", flower_run_id)


def stop_run(flower_run_id: str) -> None:
    _control("stop_run", flower_run_id)


def list_runs() -> list[dict]:
    """Flower's records of every run ("run-id" as a string, "status")."""
    return _control("list_runs")


def run_logs(flower_run_id: str, strict: bool = False) -> str:
    """The ServerApp log of a run; when not `strict`, a note instead of FlowerUnavailable."""
    try:
        return _control("run_logs", flower_run_id)
    except FlowerUnavailable as exc:
        if strict:
            raise
        return f"(logs unavailable: {exc})"
