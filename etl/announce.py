"""Announce a registered dataset's metadata to the manager over the authenticated node API.

POST ``{manager_url}/api/nodes/datasets/`` with ``Authorization: Token <node token>`` and the
JSON body {"name", "version", "use_case", "schema_version", "patient_count", "fingerprint",
"quality_summary", "feature_schema"}: metadata only, never rows.
"""
from __future__ import annotations

import requests

PAYLOAD_KEYS = ("name", "version", "use_case", "schema_version", "patient_count", "fingerprint",
                "quality_summary", "feature_schema")


def _aggregate(v) -> bool:
    # A quality summary is figures and column names; anything row-shaped must not leave the node.
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


class AnnounceError(Exception):
    """The manager could not be reached or refused the announcement."""


def validate_payload(metadata: dict) -> dict:
    """Exactly the announced keys with the right types; raises ValueError otherwise."""
    missing = [k for k in PAYLOAD_KEYS if k not in metadata]
    extra = [k for k in metadata if k not in PAYLOAD_KEYS]
    if missing or extra:
        raise ValueError(f"announcement keys: missing {missing}, not allowed {extra}")
    if not isinstance(metadata["version"], int) or not isinstance(metadata["patient_count"], int):
        raise ValueError("version and patient_count must be integers")
    if not isinstance(metadata["feature_schema"], list) or not all(isinstance(c, str) for c in metadata["feature_schema"]):
        raise ValueError("feature_schema must be a list of column names")
    qs = metadata["quality_summary"]
    if not isinstance(qs, dict) or not all(_aggregate(v) for v in qs.values()):
        raise ValueError("quality_summary must be a dict of aggregate figures (no row lists)")
    if len(str(metadata["fingerprint"])) != 64:
        raise ValueError("fingerprint must be a sha256 hex digest")
    return {k: metadata[k] for k in PAYLOAD_KEYS}


def announce(manager_url: str, node_token: str, metadata: dict, ca_file: str | None = None,
             timeout: float = 15.0) -> dict:
    """POST the dataset metadata to the manager; returns the manager's JSON reply.

    ``ca_file``: CA bundle to verify the manager's TLS certificate (None: system store).
    Raises AnnounceError with the HTTP status and the manager's message on failure."""
    body = validate_payload(metadata)
    url = manager_url.rstrip("/") + "/api/nodes/datasets/"
    try:
        r = requests.post(url, json=body, timeout=timeout,
                          headers={"Authorization": f"Token {node_token}", "Accept": "application/json"},
                          verify=ca_file if ca_file else True)
    except requests.RequestException as e:
        raise AnnounceError(f"cannot reach the manager at {url}: {e.__class__.__name__}: {e}") from None
    if r.status_code >= 300:
        detail = r.text[:300].strip()
        raise AnnounceError(f"the manager refused the announcement: HTTP {r.status_code} {detail}")
    try:
        return r.json() if r.content else {}
    except ValueError:
        return {"status": r.status_code}
