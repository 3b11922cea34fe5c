"""Writes on a person's own account (the identity provider owns name, roles and organisation)."""
from __future__ import annotations

import zoneinfo

from portal.audit.services import record

# The zones the preferences page offers: IANA region/city names, plus UTC.
TIME_ZONES = frozenset({"UTC"} | {z for z in zoneinfo.available_timezones()
                                  if "/" in z and not z.startswith(("Etc/", "SystemV/"))})


def set_timezone(user, timezone: str) -> None:
    """Show `user` every time in `timezone` (an IANA name); ValueError naming it otherwise."""
    if timezone not in TIME_ZONES:
        raise ValueError(f"{timezone!r} is not an IANA time zone name such as Europe/Madrid or UTC")
    old = user.timezone
    if old == timezone:
        return
    user.timezone = timezone
    user.save(update_fields=["timezone"])
    record(user, "user.preferences", user, {"timezone": [old, timezone]})
