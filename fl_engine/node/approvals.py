"""The worker node's own check, before it touches its data, that a run is one its operator
approved: the approvals come from the manager (this node's token), the decision is taken here.

Node config keys (``fedhaem-node start`` sets them): ``manager`` (portal base URL) and
``token-file``; ``approval-cache-s`` (how long a fetched list is reused, default 5 s).
A node started from a profile of a node home (fl_engine.node.profiles) also sets ``manager-ca``
(the TLS root it trusts for that manager), ``manager-id`` (the identity pinned in the profile),
``approvals-dir`` (the profile's approvals store) and ``profile``. Approvals are then bound to
the manager's identity (its URL + the fingerprint of that TLS root, computed here, never a name
the manager sends): the store keeps the identity it was fetched under, a store written under
another identity is never read, and only approvals of this SuperNode's own manager count.
``trust-all-runs = "true"`` turns the check off: engine tests and benchmarks only, never set by
``fedhaem-node start``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from fl_engine.federation.approval import ParticipationRefused, check_participation
from fl_engine.node import policy as node_policy
from fl_engine.node.datasets import dataset_meta
from fl_engine.node.profiles import ProfileError, manager_identity

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


def manager_id_of(node_cfg: dict) -> str | None:
    """The identity of the manager this SuperNode serves, from its own node config: computed
    from ``manager`` and ``manager-ca``; must equal the pinned ``manager-id`` when that is set.
    None for a node started without a profile (the single-manager layout)."""
    ca = node_cfg.get("manager-ca")
    pinned = node_cfg.get("manager-id") or None
    if not ca:
        if pinned:
            raise ParticipationRefused("the node config pins manager-id but names no manager-ca to check it")
        return None
    try:
        now = manager_identity(str(node_cfg["manager"]), str(ca))
    except ProfileError as err:
        raise ParticipationRefused(str(err)) from None
    if pinned and now != pinned:
        raise ParticipationRefused(
            f"profile {node_cfg.get('profile', '?')}: the manager's TLS root {ca} is not the one pinned in the "
            f"profile ({now} != {pinned}); its approvals are not used until the operator re-pins the profile")
    return now


def _store_path(node_cfg: dict, manager: str, token: str, ident: str | None) -> Path:
    if node_cfg.get("approvals-dir"):
        d = Path(str(node_cfg["approvals-dir"]))
        d.mkdir(parents=True, exist_ok=True)
        return d / "approvals.json"
    key = hashlib.sha256(f"{manager}|{token}|{ident or ''}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fedhaem-approvals-{key}.json"


def _read_store(path: Path, ident: str | None) -> list[dict] | None:
    """The stored list, or None when absent, unreadable or written under another identity."""
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(body, list):  # a cache written before identities: only for an identity-less node
        return body if ident is None else None
    if not isinstance(body, dict) or body.get("manager_id") != ident:
        return None
    approvals = body.get("approvals")
    return approvals if isinstance(approvals, list) else None


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
    ident = manager_id_of(node_cfg)
    ttl = float(node_cfg.get("approval-cache-s", 5.0))
    retry_s = float(node_cfg.get("approval-retry-s", 20.0))
    stale_s = float(node_cfg.get("approval-stale-s", 600.0))
    cache = _store_path(node_cfg, manager, token, ident)
    age = time.time() - cache.stat().st_mtime if cache.exists() else float("inf")
    if age < ttl:
        stored = _read_store(cache, ident)
        if stored is not None:
            return _tagged(stored, ident)
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
                stored = _read_store(cache, ident)
                if stored is not None:
                    log.warning("the manager %s did not answer (%s); using its approvals of %.0f s ago",
                                manager, err, age)
                    return _tagged(stored, ident)
            raise ParticipationRefused(f"the manager {manager} did not answer for approvals: {err}") from None
    if r.status_code != 200:
        raise ParticipationRefused(f"the manager refused the approvals request: HTTP {r.status_code} {r.text[:200]}")
    approvals = [a for a in r.json().get("approvals", []) if isinstance(a, dict)]
    policies = [p for p in r.json().get("policies", []) if isinstance(p, dict)]
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    body = {"manager": manager, "manager_id": ident, "approvals": approvals, "policies": policies}
    tmp.write_text(json.dumps(body))
    tmp.chmod(0o600)
    tmp.replace(cache)
    return _tagged(approvals, ident)


def registered_policies(node_cfg: dict) -> list[dict]:
    """The datasets' registered policies the manager sent with the approvals last fetched
    (call after fetch_approvals): [{"dataset", "fingerprint", "use_case", "policy"}]."""
    manager = str(node_cfg["manager"]).rstrip("/")
    ident = manager_id_of(node_cfg)
    try:
        body = json.loads(_store_path(node_cfg, manager, _token(node_cfg), ident).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if not isinstance(body, dict) or body.get("manager_id") != ident:
        return []
    return [p for p in body.get("policies") or [] if isinstance(p, dict)]


def applied_policy(node_cfg: dict, cfg, fingerprint: str, registered: list[dict]) -> dict:
    """The policy this node applies to run `cfg` on its dataset: the registered one for this
    fingerprint (DEFAULT_POLICY when none) tightened by the operator's policy-file; a change is
    appended to the node's policy audit log."""
    entry = next((p for p in registered if p.get("fingerprint") == fingerprint
                  and p.get("dataset") == cfg.dataset), None)
    try:
        limits = node_policy.local_limits(node_cfg, cfg.dataset)
        applied = node_policy.effective_policy((entry or {}).get("policy"), limits)
    except node_policy.PolicyError as err:
        raise ParticipationRefused(f"dataset policy unusable: {err}") from None
    node_policy.audit_change(node_cfg.get("data-dir"), cfg.dataset, fingerprint, applied,
                             {"registered": (entry or {}).get("policy"), "node_limits": limits})
    return applied


def _tagged(approvals: list[dict], ident: str | None) -> list[dict]:
    """Each approval with the identity of the manager it was fetched from (set here: whatever a
    manager writes in its own list is overwritten)."""
    if ident is None:
        return list(approvals)
    return [{**a, "manager_id": ident} for a in approvals if isinstance(a, dict)]


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


def local_use_case(node_cfg: dict, cfg, node_name: str, fingerprint: str, meta: dict | None = None) -> str:
    """The use case run `cfg`'s dataset is registered under in this node's own registry
    (`meta`, else fl_engine.node.datasets.dataset_meta of the version the run names); "" when the
    registry does not hold that table with exactly `fingerprint` (broad consent then covers nothing)."""
    if meta is None:
        me = next((p for p in cfg.participants if p.get("node") == node_name), None)
        version = (me or {}).get("version") or cfg.dataset_version
        try:
            meta = dataset_meta(node_cfg["data-dir"], cfg.dataset, version)
        except (KeyError, LookupError, OSError, ValueError) as err:
            log.warning("broad consent not applied: dataset %s not readable in the local registry: %s",
                        cfg.dataset, err)
            return ""
    if str(meta.get("fingerprint", "")) != fingerprint:
        return ""
    return str(meta.get("use_case") or "").upper()


def ensure_approved(node_cfg: dict, cfg, node_name: str, fingerprint: str, today: dt.date | None = None,
                    local_meta: dict | None = None) -> None:
    """Raise ParticipationRefused (logged here, reported to the manager) unless run `cfg` is an
    approved study on this node's dataset with exactly the approved settings, and the dataset's
    policy (fl_engine.node.policy: registered, tightened by the node) allows it `today` (UTC).
    A broad-consent policy stands for the approval of any study of the dataset's use case, the
    use case of the node's own registry (`local_meta`, the dataset's registry metadata, else
    read from the registry), not the one the manager sends."""
    if _truthy(node_cfg.get("trust-all-runs", "")):
        return
    try:
        if not node_cfg.get("manager"):
            raise ParticipationRefused("the node has no manager to ask for approvals "
                                       "(start it with fedhaem-node start --manager ...)")
        ident = manager_id_of(node_cfg)
        approvals = fetch_approvals(node_cfg)
        if ident is not None:  # only approvals given to this SuperNode's own manager count
            approvals = [a for a in approvals if a.get("manager_id") == ident]
        registered = registered_policies(node_cfg)
        applied = applied_policy(node_cfg, cfg, fingerprint, registered)
        purpose = node_policy.purpose_of(cfg.task)
        problems = node_policy.run_problems(
            applied, purpose=purpose, dp_enabled=bool(cfg.dp_enabled), min_cell_count=int(cfg.min_cell_count),
            today=today or dt.datetime.now(dt.timezone.utc).date())
        if problems:
            raise ParticipationRefused(f"dataset {cfg.dataset} policy: " + "; ".join(problems))
        entry = next((p for p in registered if p.get("fingerprint") == fingerprint), None)
        broad = None
        if entry and applied["consent_scope"] == "broad":
            # The use case is the one this node registered the table under, never the manager's
            # word: a manager claiming another use case must not widen what the consent covers.
            use_case = local_use_case(node_cfg, cfg, node_name, fingerprint, local_meta)
            broad = {"use_case": use_case, "fingerprint": fingerprint} if use_case else None
        try:
            check_participation(cfg, node_name, fingerprint, approvals, broad_consent=broad)
        except ParticipationRefused as err:
            if ident is None:
                raise
            raise ParticipationRefused(
                f"{err} [manager profile {node_cfg.get('profile', '?')}: {node_cfg['manager']}, identity "
                f"{ident}; approvals given to this hospital's other managers never count here]") from None
    except ParticipationRefused as err:
        log.error("refused run %s of study %s: %s", cfg.portal_run_id or "?", cfg.study_id or "?", err)
        report_refusal(node_cfg, cfg, str(err))
        raise
