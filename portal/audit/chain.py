"""The audit trail's hash chain: each event stores the hash of the one before it (`prev_hash`)
and its own `hash` = sha256 over a canonical serialisation of its fields and `prev_hash`.
Editing, deleting or inserting a row in the middle breaks the chain at that row."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

GENESIS = "0" * 64
HASHED_FIELDS = ("at", "actor_id", "actor_name", "action", "object_type", "object_id", "object_repr",
                 "detail", "prev_hash")


def canonical_detail(detail) -> dict:
    """`detail` as the database gives it back (JSON round trip): what is stored is what is hashed."""
    return json.loads(json.dumps(detail or {}))


def _at(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def canonical_bytes(event) -> bytes:
    """The bytes hashed for an event (model instance or anything with the same attributes)."""
    doc = {name: getattr(event, name) for name in HASHED_FIELDS}
    doc["at"] = _at(doc["at"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def event_hash(event) -> str:
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def first_break(events):
    """Walk events in insertion (id) order; return (event, reason) for the first one that does
    not chain, or None when the whole chain holds."""
    expected_prev = GENESIS
    for e in events:
        if e.prev_hash != expected_prev:
            return e, "prev_hash does not match the previous event's hash (an event was removed, inserted or reordered)"
        if event_hash(e) != e.hash:
            return e, "hash does not match the event's fields (the event was edited)"
        expected_prev = e.hash
    return None
