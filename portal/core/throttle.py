"""A small failure counter in Django's cache: after `limit` failures for a key within `window_s`
seconds the key is locked out for `lockout_s` seconds, whatever is tried meanwhile (the right
password or token included). Used by the API's token authentication and the development
provider's sign-in form. The cache is per process unless CACHES names a shared one."""
from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True)
class FailureLimit:
    prefix: str
    limit: int
    window_s: int
    lockout_s: int

    def locked(self, key: str) -> bool:
        return bool(cache.get(f"{self.prefix}:lock:{key}"))

    def failed(self, key: str) -> bool:
        """Count one failure; True when this one locks the key out."""
        counter = f"{self.prefix}:fail:{key}"
        cache.add(counter, 0, self.window_s)
        try:
            n = cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.set(counter, 1, self.window_s)
            n = 1
        if n >= self.limit:
            cache.set(f"{self.prefix}:lock:{key}", 1, self.lockout_s)
            cache.delete(counter)
            return True
        return False

    def succeeded(self, key: str) -> None:
        cache.delete(f"{self.prefix}:fail:{key}")


def client_address(request) -> str:
    """The caller's address: REMOTE_ADDR (a TLS proxy in front sets it through the ASGI server's
    proxy-headers option, not through a header the client could forge)."""
    return request.META.get("REMOTE_ADDR") or "unknown"
