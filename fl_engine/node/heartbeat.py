"""Heartbeats from a worker node to the manager portal: who I am, which datasets I hold
(metadata only), whether my SuperNode runs, what each dataset has spent of its privacy budget
(the ledger's aggregates: fl_engine.node.budget.spend_report) and the operator's local policy
limits (the policy-file, fl_engine.node.policy). Failures to reach the manager are logged, never
fatal. No row, no patient-level value leaves the node here."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from fl_engine.node.budget import LedgerError, ledger_dir, spend_report
from fl_engine.node.datasets import list_datasets
from fl_engine.node.policy import PolicyError, read_limits_file
from fl_engine.node.profiles import PROFILE_FILE

log = logging.getLogger("fedhaem.node")

HEARTBEAT_PATH = "/api/nodes/heartbeat/"


def inferred_node_cfg(data_dir: str | Path) -> dict:
    """The node-config keys a heartbeat needs when its caller gives none: the data dir and, when
    that dir is a node-home profile's own ``data/`` (a profile.json beside it), the profile's
    approvals dir and pinned manager identity (so the ledger is HOME/privacy, as the ClientApps'
    one, and only this manager's runs are listed)."""
    data_dir = Path(data_dir)
    cfg = {"data-dir": str(data_dir)}
    prof = data_dir.parent / PROFILE_FILE
    if prof.is_file():
        try:
            body = json.loads(prof.read_text())
        except (OSError, json.JSONDecodeError):
            return cfg
        cfg["approvals-dir"] = str(data_dir.parent / "approvals")
        if isinstance(body, dict) and body.get("manager_id"):
            cfg["manager-id"] = str(body["manager_id"])
    return cfg


def heartbeat_payload(name: str, data_dir: str | Path, status: str, flower_node_id: str | None = None,
                      node_cfg: dict | None = None) -> dict:
    """{"name", "flower_node_id" (string or absent), "datasets": [metadata], "status",
    "privacy": {"datasets": [ledger summary per dataset]}, "policy_limits": {policy-file}}.

    `node_cfg`: the SuperNode's node-config keys (``privacy-ledger-dir``, ``approvals-dir``,
    ``manager-id``, ``policy-file`` ...); without it they are inferred from `data_dir`
    (`inferred_node_cfg`) and "privacy" is sent only when the ledger folder exists (a guessed
    folder that is not there would report a spend of zero) and "policy_limits" not at all (the
    policy-file is a node-config key). A damaged ledger or policy-file is logged and its part
    left out: the manager keeps what it had."""
    try:
        datasets = list_datasets(data_dir)
    except Exception as err:  # a broken registry is reported, not hidden
        log.warning("dataset registry %s unreadable: %s", data_dir, err)
        datasets, status = [], "registry-error"
    payload = {"name": name, "datasets": datasets, "status": status}
    if flower_node_id:
        payload["flower_node_id"] = str(flower_node_id)
    cfg = {"data-dir": str(data_dir), **node_cfg} if node_cfg is not None else inferred_node_cfg(data_dir)
    names = sorted({str(d["name"]) for d in datasets if d.get("name")})
    try:
        folder = ledger_dir(cfg)
        if names and (node_cfg is not None or folder.is_dir()):
            manager = str(cfg.get("manager-id") or cfg.get("manager") or "")
            payload["privacy"] = {"datasets": spend_report(folder, names, cfg, manager)}
    except (LedgerError, OSError, ValueError) as err:
        log.warning("privacy ledger not reported: %s", err)
    if node_cfg is not None:  # without the SuperNode's config its policy-file is unknown: say nothing
        try:
            payload["policy_limits"] = read_limits_file(cfg)
        except PolicyError as err:
            log.warning("local policy limits not announced: %s", err)
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
