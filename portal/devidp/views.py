"""The development provider's sign-in form, with a lockout after repeated wrong passwords."""
from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import render

from portal.core.throttle import FailureLimit, client_address

log = logging.getLogger(__name__)


def _limits():
    window, lockout = settings.LOGIN_FAILURE_WINDOW_S, settings.LOGIN_LOCKOUT_S
    # Per account (guessing one password) and per address (spraying many accounts).
    return (FailureLimit("devidp:user", settings.LOGIN_FAILURE_LIMIT, window, lockout),
            FailureLimit("devidp:addr", settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS, window, lockout))


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView; LOGIN_FAILURE_LIMIT wrong passwords for one username (or
    LOGIN_FAILURE_LIMIT_PER_ADDRESS from one address) lock it out for LOGIN_LOCKOUT_S seconds:
    429, the right password included."""

    template_name = "devidp/login.html"

    def _keys(self):
        user_limit, addr_limit = _limits()
        username = (self.request.POST.get("username") or "").strip().lower()
        return [(user_limit, username), (addr_limit, client_address(self.request))]

    def post(self, request, *args, **kwargs):
        if any(limit.locked(key) for limit, key in self._keys()):
            response = render(request, "devidp/login.html", {"locked": True, "next": request.POST.get("next", "")},
                              status=429)
            response["Retry-After"] = str(settings.LOGIN_LOCKOUT_S)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for limit, key in self._keys():
            if limit.failed(key):
                log.warning("sign-in locked for %s seconds: %s %r", limit.lockout_s, limit.prefix, key)
        return super().form_invalid(form)

    def form_valid(self, form):
        for limit, key in self._keys():
            limit.succeeded(key)
        return super().form_valid(form)
