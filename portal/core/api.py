"""Shared API helpers: error shape and role-based permissions."""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


DB_ID_MAX = 2**63 - 1  # the largest primary key any of our databases stores (signed 64-bit)


def id_query_param(request, name: str) -> int | None:
    """The query parameter `name` as a database id: None when absent or empty; a 400 naming the
    parameter when it is not a whole number from 1 to DB_ID_MAX (never a server error)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    # isdecimal alone accepts other scripts' digits ("１２"); the length check keeps int() cheap
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 19 and 1 <= int(raw) <= DB_ID_MAX):
        raise ValidationError({name: [f"must be an id: a whole number from 1 to {DB_ID_MAX}"]})
    return int(raw)


class Pagination(LimitOffsetPagination):
    """limit/offset with bounds: a huge number is clamped, never passed to the database."""

    max_limit = 1000

    def get_offset(self, request):
        return min(super().get_offset(request), 2**31 - 1)


def exception_handler(exc, context):
    """DRF's handler, plus a top-level `detail` on validation errors so clients show one line;
    a model's own validation error is a 400 naming the fields, not a server error."""
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" not in response.data:
        fields = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                           for k, v in response.data.items())
        response.data = {"detail": fields, "errors": response.data}
    return response


def perms_required(*perms: str, safe: tuple[str, ...] = ()):
    """Permission class: authenticated and holding every perm in `perms`; for safe methods
    (GET/HEAD/OPTIONS) the `safe` perms instead when given."""

    class _HasPerms(permissions.BasePermission):
        message = "Your role does not allow this."

        def has_permission(self, request, view):
            user = request.user
            if not (user and user.is_authenticated):
                return False
            needed = safe if (safe and request.method in permissions.SAFE_METHODS) else perms
            return user.has_perms(needed)

    _HasPerms.__name__ = "HasPerms_" + "_".join(p.split(".")[-1] for p in perms)
    return _HasPerms


def refusal_response(exc):
    """A service's refusal as the API says it: 400 naming the field when the exception carries
    one (`exc.field`), else 409 (the current state does not allow it)."""
    field = getattr(exc, "field", None)
    if field:
        return Response({"detail": f"{field}: {exc}", "errors": {field: [str(exc)]}},
                        status=status.HTTP_400_BAD_REQUEST)
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
