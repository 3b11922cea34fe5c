"""pytest plugin (loaded with `-p portal.testing`, before pytest-django reads the settings):
isolates a test session from a developer's demo state: its own var/ folder, embedded-Redis port
and channel-layer prefix. Variables already set (CI) win."""
from __future__ import annotations

import os
import tempfile

from portal.audit.db_guard import allow_test_flush

os.environ.setdefault("FEDHAEM_VAR_DIR", tempfile.mkdtemp(prefix="fedhaem-test-var-"))
os.environ.setdefault("EMBEDDED_REDIS_PORT", str(16391 + os.getpid() % 2000))
os.environ.setdefault("CHANNELS_PREFIX", f"fedhaem-test-{os.getpid()}")


def pytest_sessionstart(session):
    # Transactional tests end with Django's flush (DELETE on SQLite, TRUNCATE on PostgreSQL); the
    # audit table's append-only triggers are dropped and re-created inside that transaction.
    try:
        allow_test_flush()
    except Exception:  # Django not configured in this pytest run (pure-package tests)
        pass
