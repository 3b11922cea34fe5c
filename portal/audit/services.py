"""The one way to write the audit trail."""
from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from portal.audit import chain
from portal.audit.models import AuditEvent

# pg_advisory_xact_lock key: one writer at a time extends the chain (any stable bigint).
_PG_CHAIN_LOCK = 0x46454448_41454D41 & 0x7FFFFFFFFFFFFFFF


def record(actor, action: str, obj=None, detail: dict | None = None) -> AuditEvent:
    """Append an event; `actor` may be None for the system."""
    event = AuditEvent(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=getattr(actor, "username", "") or "system",
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        detail=chain.canonical_detail(detail),
    )
    with transaction.atomic():
        # Serialise writers so two of them never chain onto the same predecessor. SQLite: the
        # transaction already holds the write lock (transaction_mode IMMEDIATE in settings).
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_CHAIN_LOCK])
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event.prev_hash = last or chain.GENESIS
        event.at = timezone.now()
        event.hash = chain.event_hash(event)
        event.save()
    return event
