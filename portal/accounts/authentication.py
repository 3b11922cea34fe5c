"""API token authentication that locks an address out after repeated wrong tokens (429)."""
from __future__ import annotations

from django.conf import settings
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled

from portal.audit.services import record
from portal.core.throttle import FailureLimit, client_address


def _limit() -> FailureLimit:
    return FailureLimit("fedhaem:token-auth", settings.TOKEN_AUTH_FAILURE_LIMIT,
                        settings.TOKEN_AUTH_LOCKOUT_S, settings.TOKEN_AUTH_LOCKOUT_S)


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's `Token <key>` authentication; TOKEN_AUTH_FAILURE_LIMIT wrong tokens from one
    address within TOKEN_AUTH_LOCKOUT_S seconds lock that address out of token authentication
    (HTTP 429 with Retry-After) for TOKEN_AUTH_LOCKOUT_S seconds, right tokens included."""

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None
        limit, address = _limit(), client_address(request)
        if limit.locked(address):
            raise Throttled(wait=limit.lockout_s, detail="Too many failed token authentications from "
                                                          "this address; try again later.")
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            if limit.failed(address):
                record(None, "auth.token_lockout", None, {"address": address, "failures": limit.limit,
                                                          "lockout_s": limit.lockout_s})
            raise
