"""Read-only checks of the parts the portal depends on."""
from __future__ import annotations

import time

from django.conf import settings
from django.db import connection


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
    import redis as redis_lib

    started = time.monotonic()
    try:
        client = redis_lib.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        return {"status": "ok", "embedded": settings.EMBEDDED_REDIS, "latency_ms": _ms(started)}
    except Exception as exc:
        return {"status": "error", "embedded": settings.EMBEDDED_REDIS, "error": str(exc)[:300]}


def nodes() -> dict:
    from portal.nodes.models import WorkerNode

    approved = list(WorkerNode.objects.filter(status=WorkerNode.Status.APPROVED))
    online = [n.name for n in approved if n.online]
    return {
        "approved": len(approved),
        "online": len(online),
        "online_nodes": online,
        "pending": WorkerNode.objects.filter(status=WorkerNode.Status.PENDING).count(),
    }


def superlink() -> dict:
    try:
        from portal.studies import flower_adapter
    except ImportError:
        return {"status": "not_configured"}
    return flower_adapter.superlink_health()


def report() -> dict:
    parts = {"database": database(), "redis": redis(), "superlink": superlink(), "nodes": nodes()}
    core_ok = parts["database"]["status"] == "ok" and parts["redis"]["status"] == "ok"
    return {"status": "ok" if core_ok else "degraded", **parts}


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
