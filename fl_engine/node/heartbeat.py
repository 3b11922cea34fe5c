"""Heartbeats from a worker node to the manager portal: who I am, which datasets I hold
(metadata only), whether my SuperNode runs. Failures to reach the manager are logged, never fatal."""
from __future__ import annotations

import logging
from pathlib import Path

from fl_engine.node.datasets import list_datasets

log = logging.getLogger("fedhaem.node")

HEARTBEAT_PATH = "/api/nodes/heartbeat/"


def heartbeat_payload(name: str, data_dir: str | Path, status: str, flower_node_id: str | None = None) -> dict:
    """{"name", "flower_node_id" (string or absent), "datasets": [metadata], "status"}."""
    try:
        datasets = list_datasets(data_dir)
    except Exception as err:  # a broken registry is reported, not hidden
        log.warning("dataset registry %s unreadable: %s", data_dir, err)
        datasets, status = [], "registry-error"
    payload = {"name": name, "datasets": datasets, "status": status}
    if flower_node_id:
        payload["flower_node_id"] = str(flower_node_id)
    return payload


def send_heartbeat(manager: str, token: str | None, payload: dict, timeout: float = 10.0) -> bool:
    """POST the payload to {manager}/api/nodes/heartbeat/; True on HTTP 2xx."""
    import requests
    url = manager.rstrip("/") + HEARTBEAT_PATH
    headers = {"Authorization": f"Token {token}"} if token else {}
    try:
        r = requests.post(url, json=payload, headers=headers, timeout=timeout)
    except requests.RequestException as err:
        log.warning("heartbeat to %s failed: %s", url, err)
        return False
    if r.status_code >= 300:
        log.warning("heartbeat to %s: HTTP %s %s", url, r.status_code, r.text[:200])
        return False
    return True
