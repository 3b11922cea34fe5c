"""Who is acting, for audit events written far from the request (model signals)."""
from __future__ import annotations

import contextvars

_request = contextvars.ContextVar("fedhaem_audit_request", default=None)


def current_actor():
    """The signed-in user of the request being served (session or API token), else None.
    Read late: DRF authenticates a token inside the view, after the middleware ran."""
    request = _request.get()
    user = getattr(request, "user", None) if request is not None else None
    return user if getattr(user, "is_authenticated", False) else None


class AuditActorMiddleware:
    """Remembers the request so model signals can name who made a change."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
