"""A dataset's use policy, as the node applies it to every message of every run.

The registered policy comes from the manager (fetched with the node's token next to its
approvals: fl_engine.node.approvals); the node operator may tighten it locally (node config
``policy-file``: a JSON object {dataset name or "*": partial policy}); the stricter of the two
applies. A dataset without a registered policy gets DEFAULT_POLICY (fine-grained consent, every
purpose, no extra minimum): exactly the per-study approvals FedHaem had before policies.
Changes of the policy a node applies are appended to ``policy-audit.jsonl`` in its data dir.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

PURPOSES = ("training", "synthesis", "analysis")
SENSITIVITIES = ("general", "sensitive")
SCOPES = ("fine_grained", "broad")
# A sensitive dataset: model updates only with DP; counts only above this small-cell threshold.
SENSITIVE_MIN_CELL_COUNT = 10
FIELDS = ("sensitivity", "consent_scope", "purposes", "require_dp", "min_cell_count", "expires_on")
DEFAULT_POLICY = {"sensitivity": "general", "consent_scope": "fine_grained", "purposes": list(PURPOSES),
                  "require_dp": False, "min_cell_count": 0, "expires_on": None}


class PolicyError(ValueError):
    """A policy off the schema; `problems` lists (field, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))


def validate_policy(data, partial: bool = False) -> dict:
    """The canonical policy (purposes sorted, expiry an ISO date or None); `partial` keeps only
    the fields given (a node operator's local limits). PolicyError names every bad field."""
    if not isinstance(data, dict):
        raise PolicyError([("policy", "must be an object")])
    problems, out = [], {}
    for k in sorted(set(data) - set(FIELDS)):
        problems.append((str(k)[:60], "unknown policy field"))
    for k in FIELDS:
        if k not in data:
            if not partial:
                out[k] = DEFAULT_POLICY[k]
            continue
        v = data[k]
        if k == "sensitivity" and v not in SENSITIVITIES:
            problems.append((k, f"one of {', '.join(SENSITIVITIES)}"))
        elif k == "consent_scope" and v not in SCOPES:
            problems.append((k, f"one of {', '.join(SCOPES)}"))
        elif k == "purposes" and (not isinstance(v, list) or any(p not in PURPOSES for p in v)):
            problems.append((k, f"a list of {', '.join(PURPOSES)}"))
        elif k == "require_dp" and not isinstance(v, bool):
            problems.append((k, "true or false"))
        elif k == "min_cell_count" and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1000):
            problems.append((k, "an integer from 0 to 1000"))
        elif k == "expires_on" and v is not None:
            try:
                v = dt.date.fromisoformat(str(v)).isoformat()
            except ValueError:
                problems.append((k, "a date YYYY-MM-DD or null"))
        if k == "purposes" and isinstance(v, list):
            v = sorted(set(v))
        out[k] = v
    if problems:
        raise PolicyError(problems)
    return out


def stricter(a: dict, b: dict) -> dict:
    """The stricter of full policy `a` and (possibly partial) policy `b`, field by field."""
    out = dict(a)
    if b.get("sensitivity") == "sensitive":
        out["sensitivity"] = "sensitive"
    if b.get("consent_scope") == "fine_grained":
        out["consent_scope"] = "fine_grained"
    if "purposes" in b:
        out["purposes"] = sorted(set(a["purposes"]) & set(b["purposes"]))
    out["require_dp"] = bool(a["require_dp"] or b.get("require_dp", False))
    out["min_cell_count"] = max(int(a["min_cell_count"]), int(b.get("min_cell_count", 0)))
    dates = [d for d in (a.get("expires_on"), b.get("expires_on")) if d]
    out["expires_on"] = min(dates) if dates else None
    return out


def policy_hash(policy: dict) -> str:
    return hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def purpose_of(task: str) -> str:
    """The policy purpose a run task serves (survival training and everything else = training)."""
    return {"synthesis": "synthesis", "analysis": "analysis"}.get(str(task), "training")


def run_problems(policy: dict, *, purpose: str, dp_enabled: bool, min_cell_count: int,
                 today: dt.date) -> list[str]:
    """Why a run with these settings may not use a dataset under `policy`, each with what would
    make it usable; [] when it may."""
    out = []
    if policy.get("expires_on") and today > dt.date.fromisoformat(policy["expires_on"]):
        out.append(f"the dataset's policy expired on {policy['expires_on']} (the registering hospital "
                   "can renew it with a later expiry date)")
    if purpose not in policy["purposes"]:
        out.append(f"purpose {purpose!r} is not allowed by the dataset's policy (allowed: "
                   f"{', '.join(policy['purposes']) or 'none'}); the hospital would have to allow it")
    need_dp = policy["require_dp"] or (policy["sensitivity"] == "sensitive" and purpose == "training")
    if need_dp and purpose == "training" and not dp_enabled:
        out.append("the dataset's policy requires differential privacy for model training "
                   f"({policy['sensitivity']} data): enable DP-FedAvg in the study's privacy settings")
    floor = int(policy["min_cell_count"])
    if policy["sensitivity"] == "sensitive" and purpose != "training":
        floor = max(floor, SENSITIVE_MIN_CELL_COUNT)
    if int(min_cell_count) < floor:
        out.append(f"small-cell threshold {min_cell_count} is below the policy's minimum of {floor}: "
                   f"raise the study's minimum cell count to at least {floor}")
    return out


def _limits_body(node_cfg: dict) -> dict:
    path = node_cfg.get("policy-file")
    if not path:
        return {}
    try:
        body = json.loads(Path(str(path)).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PolicyError([("policy-file", f"{path}: {err}")]) from None
    if not isinstance(body, dict):
        raise PolicyError([("policy-file", f"{path}: must be a JSON object")])
    return body


def local_limits(node_cfg: dict, dataset: str) -> dict:
    """The node operator's own limits for `dataset` (policy-file: "*" then the dataset's entry),
    as one partial policy; {} when the node sets none. A malformed file is a PolicyError."""
    return merge_limits(_limits_body(node_cfg), dataset)


def read_limits_file(node_cfg: dict) -> dict:
    """The operator's policy-file as it is ({"*": partial, "<dataset>": partial}), each entry
    validated (what the heartbeat announces); {} when the node sets none. PolicyError when malformed."""
    return {str(k): validate_policy(v, partial=True) for k, v in _limits_body(node_cfg).items()}


def stricter_partial(a: dict, b: dict) -> dict:
    """Two partial policies as one, field by field the stricter; a field neither sets stays unset
    (so two partial limits never turn into DEFAULT_POLICY's fine-grained consent)."""
    out = {}
    for k in FIELDS:
        if k not in a and k not in b:
            continue
        if k not in a or k not in b:
            out[k] = a[k] if k in a else b[k]
        elif k == "sensitivity":
            out[k] = "sensitive" if "sensitive" in (a[k], b[k]) else "general"
        elif k == "consent_scope":
            out[k] = "fine_grained" if "fine_grained" in (a[k], b[k]) else "broad"
        elif k == "purposes":
            out[k] = sorted(set(a[k]) & set(b[k]))
        elif k == "require_dp":
            out[k] = bool(a[k] or b[k])
        elif k == "min_cell_count":
            out[k] = max(int(a[k]), int(b[k]))
        else:  # expires_on: the earlier date, a null leaves the other
            dates = [d for d in (a[k], b[k]) if d]
            out[k] = min(dates) if dates else None
    return out


def merge_limits(body: dict, dataset: str) -> dict:
    """The partial policy a node's limits `body` ({"*": partial, "<dataset>": partial}, the
    policy-file's shape) set for `dataset`: "*" then the dataset's own entry, the stricter wins
    field by field; {} when neither is there. An entry off the schema is a PolicyError."""
    out: dict = {}
    for key in ("*", dataset):
        if key in body:
            out = stricter_partial(out, validate_policy(body[key], partial=True))
    return out


def effective_policy(registered: dict | None, limits: dict) -> dict:
    """The policy the node applies: the registered one (or DEFAULT_POLICY) tightened by `limits`."""
    base = validate_policy(registered) if registered else dict(DEFAULT_POLICY)
    return stricter(base, limits) if limits else base


def audit_change(data_dir, dataset: str, fingerprint: str, policy: dict, source: dict) -> None:
    """Append the policy now applied to `dataset` to policy-audit.jsonl when it differs from the
    last one recorded for it (the node's side of the policy audit trail)."""
    if not data_dir:
        return
    log = Path(str(data_dir)) / "policy-audit.jsonl"
    digest = policy_hash(policy)
    last = None
    try:
        for line in log.read_text().splitlines():
            e = json.loads(line)
            if e.get("dataset") == dataset and e.get("fingerprint") == fingerprint:
                last = e.get("policy_hash")
    except (OSError, json.JSONDecodeError):
        pass
    if last == digest:
        return
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(), "dataset": dataset, "fingerprint": fingerprint,
             "policy_hash": digest, "policy": policy, **source}
    with open(log, "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
