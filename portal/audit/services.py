"""The one way to write the audit trail."""
from __future__ import annotations

from portal.audit.models import AuditEvent


def record(actor, action: str, obj=None, detail: dict | None = None) -> AuditEvent:
    """Append an event; `actor` may be None for the system."""
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=getattr(actor, "username", "") or "system",
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        detail=detail or {},
    )
