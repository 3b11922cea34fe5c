"""The worker node's own check, before it touches its data, that a run is one its operator
approved: the approvals come from the manager (this node's token), the decision is taken here.

Node config keys (``fedhaem-node start`` sets them): ``manager`` (portal base URL) and
``token-file``; ``approval-cache-s`` (how long a fetched list is reused, default 5 s).
``trust-all-runs = "true"`` turns the check off: engine tests and benchmarks only, never set by
``fedhaem-node start``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from fl_engine.federation.approval import ParticipationRefused, check_participation

log = logging.getLogger("fedhaem.node")

APPROVALS_PATH = "/api/nodes/approvals/"
REFUSALS_PATH = "/api/nodes/refusals/"


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes")


def _token(node_cfg: dict) -> str:
    path = node_cfg.get("token-file")
    if not path:
        raise ParticipationRefused("the node has no token-file: it cannot ask the manager for its approvals")
    try:
        return Path(str(path)).read_text().strip()
    except OSError as err:
        raise ParticipationRefused(f"token-file {path}: {err}") from None


def fetch_approvals(node_cfg: dict, timeout: float = 10.0) -> list[dict]:
    """This node's approvals from the manager, reused for approval-cache-s seconds (a file cache
    under the temp folder: ClientApps may run in short-lived processes).

    A manager that cannot be reached (restarting) is asked again for up to approval-retry-s
    (20 s); after that the last list it gave is used if it is younger than approval-stale-s
    (600 s), so a portal restart does not stop running studies. A manager that answers always
    wins: a withdrawn approval takes effect at the next fetch."""
    import requests

    manager = str(node_cfg["manager"]).rstrip("/")
    token = _token(node_cfg)
    ttl = float(node_cfg.get("approval-cache-s", 5.0))
    retry_s = float(node_cfg.get("approval-retry-s", 20.0))
    stale_s = float(node_cfg.get("approval-stale-s", 600.0))
    key = hashlib.sha256(f"{manager}|{token}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"fedhaem-approvals-{key}.json"
    age = time.time() - cache.stat().st_mtime if cache.exists() else float("inf")
    if age < ttl:
        try:
            return json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    deadline = time.monotonic() + retry_s
    while True:
        try:
            r = requests.get(manager + APPROVALS_PATH, headers={"Authorization": f"Token {token}"}, timeout=timeout)
            break
        except requests.RequestException as err:
            if time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            if age < stale_s:
                log.warning("the manager %s did not answer (%s); using its approvals of %.0f s ago", manager, err, age)
                try:
                    return json.loads(cache.read_text())
                except (OSError, json.JSONDecodeError):
                    pass
            raise ParticipationRefused(f"the manager {manager} did not answer for approvals: {err}") from None
    if r.status_code != 200:
        raise ParticipationRefused(f"the manager refused the approvals request: HTTP {r.status_code} {r.text[:200]}")
    approvals = r.json().get("approvals", [])
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(approvals))
    tmp.chmod(0o600)
    tmp.replace(cache)
    return approvals


def report_refusal(node_cfg: dict, cfg, reason: str) -> None:
    """Tell the manager (best effort) that this node refused a run; it audits the refusal."""
    import requests

    manager = node_cfg.get("manager")
    if not manager:
        return
    try:
        requests.post(str(manager).rstrip("/") + REFUSALS_PATH, timeout=10,
                      headers={"Authorization": f"Token {_token(node_cfg)}"},
                      json={"study": str(cfg.study_id)[:20], "run": str(cfg.portal_run_id)[:20],
                            "dataset": cfg.dataset[:100], "reason": reason[:2000]})
    except (requests.RequestException, ParticipationRefused) as err:
        log.warning("refusal not reported to the manager: %s", err)


def ensure_approved(node_cfg: dict, cfg, node_name: str, fingerprint: str) -> None:
    """Raise ParticipationRefused (logged here, reported to the manager) unless run `cfg` is an
    approved study on this node's dataset with exactly the approved settings."""
    if _truthy(node_cfg.get("trust-all-runs", "")):
        return
    try:
        if not node_cfg.get("manager"):
            raise ParticipationRefused("the node has no manager to ask for approvals "
                                       "(start it with fedhaem-node start --manager ...)")
        check_participation(cfg, node_name, fingerprint, fetch_approvals(node_cfg))
    except ParticipationRefused as err:
        log.error("refused run %s of study %s: %s", cfg.portal_run_id or "?", cfg.study_id or "?", err)
        report_refusal(node_cfg, cfg, str(err))
        raise
