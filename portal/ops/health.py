"""Read-only checks of the parts the portal depends on.

The SuperLink check runs the `flwr` CLI (seconds), so its answer is kept for
`HEALTH_SUPERLINK_CACHE_S` seconds (default 5) per portal process: however many callers, at
most one SuperLink query per interval, and concurrent callers wait for the one in flight.
Anonymous callers get the overall status only (`status_only`), which never queries the
SuperLink and names no node.
"""
from __future__ import annotations

import threading
import time

import redis as redis_lib
from django.conf import settings
from django.db import connection

from portal.nodes.models import WorkerNode
from portal.studies import flower_adapter


def database() -> dict:
    started = time.monotonic()
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        return {"status": "ok", "vendor": connection.vendor, "latency_ms": _ms(started)}
    except Exception as exc:  # any driver error means "down", with its reason
        return {"status": "error", "error": str(exc)[:300]}


def redis() -> dict:
    started = time.monotonic()
    try:
        client = redis_lib.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        return {"status": "ok", "embedded": settings.EMBEDDED_REDIS, "latency_ms": _ms(started)}
    except Exception as exc:
        return {"status": "error", "embedded": settings.EMBEDDED_REDIS, "error": str(exc)[:300]}


def nodes() -> dict:
    approved = list(WorkerNode.objects.filter(status=WorkerNode.Status.APPROVED))
    online = [n.name for n in approved if n.online]
    return {
        "approved": len(approved),
        "online": len(online),
        "online_nodes": online,
        "pending": WorkerNode.objects.filter(status=WorkerNode.Status.PENDING).count(),
    }


_superlink_lock = threading.Lock()
_superlink_cached: dict = {}  # {"key": address, "at": monotonic seconds, "value": answer}


def superlink() -> dict:
    """The SuperLink's state, cached (see the module docstring); `checked_s_ago` says how old."""
    ttl = float(getattr(settings, "HEALTH_SUPERLINK_CACHE_S", 5.0))
    key = getattr(settings, "FLOWER_CONTROL_ADDRESS", "")
    with _superlink_lock:  # held while querying: concurrent callers share one query
        cached = _superlink_cached
        now = time.monotonic()
        if cached.get("key") != key or now - cached.get("at", float("-inf")) >= ttl:
            cached.update(key=key, value=flower_adapter.superlink_health(), at=time.monotonic())
        return {**cached["value"], "checked_s_ago": round(time.monotonic() - cached["at"], 1)}


def status_only() -> dict:
    """The overall status and nothing else (for anonymous callers): database and Redis."""
    return {"status": _overall(database(), redis())}


def report() -> dict:
    """Every part's state, node names and counts included (staff only)."""
    parts = {"database": database(), "redis": redis(), "superlink": superlink(), "nodes": nodes()}
    return {"status": _overall(parts["database"], parts["redis"]), **parts}


def _overall(db: dict, redis_state: dict) -> str:
    return "ok" if db["status"] == "ok" and redis_state["status"] == "ok" else "degraded"


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
