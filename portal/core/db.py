"""Retrying a write that lost a race for the database: SQLite's "database is locked" (another
process held the write lock past the busy timeout) and PostgreSQL's serialization failures and
deadlocks. Anything else is raised at once.

    retry_on_lock(lambda: services.ingest_round(run_id, payload))        # call now
    @retrying_on_lock(attempts=8)                                         # or decorate
    def ingest(...): ...

The retried function must own its transaction: inside an outer `atomic` block the transaction is
already broken, so the error goes up to whoever owns that block (no retry, no sleep).
"""
from __future__ import annotations

import functools
import logging
import random
import time
from typing import Callable, TypeVar

from django.db import OperationalError, transaction

log = logging.getLogger("fedhaem.db")

T = TypeVar("T")

# SQLSTATE serialization_failure, deadlock_detected
_PG_RETRYABLE = {"40001", "40P01"}
_SQLITE_LOCKED = ("database is locked", "database table is locked", "database schema is locked")


def is_lock_error(exc: BaseException) -> bool:
    """True for a lost race worth retrying: SQLite locked, PostgreSQL 40001 / 40P01."""
    if not isinstance(exc, OperationalError):
        # psycopg raises SerializationFailure as an OperationalError subclass, which Django
        # wraps into django.db.OperationalError; anything else is not a race.
        return False
    message = str(exc).lower()
    if any(m in message for m in _SQLITE_LOCKED):
        return True
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return code in _PG_RETRYABLE


def _delay(attempt: int, backoff: float, max_backoff: float) -> float:
    # Full jitter around an exponential step, so two writers that collided do not collide again.
    return min(max_backoff, backoff * (2 ** attempt)) * random.uniform(0.5, 1.5)


def retry_on_lock(fn: Callable[[], T], attempts: int = 6, backoff: float = 0.1,
                  max_backoff: float = 3.0, using: str | None = None) -> T:
    """Call `fn()`; on a lock / serialization error, wait (jittered, doubling from `backoff`
    seconds up to `max_backoff`) and call again, at most `attempts` calls in all."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if not is_lock_error(exc) or attempt == attempts - 1:
                raise
            if transaction.get_connection(using).in_atomic_block:
                raise  # the caller's transaction is broken; its owner must retry the whole of it
            wait = _delay(attempt, backoff, max_backoff)
            log.warning("%s: %s; retrying in %.2f s (attempt %d of %d)",
                        getattr(getattr(fn, "func", fn), "__qualname__", "write"), exc, wait, attempt + 2, attempts)
            time.sleep(wait)
    raise AssertionError("unreachable")


def retrying_on_lock(func: Callable | None = None, *, attempts: int = 6, backoff: float = 0.1,
                     max_backoff: float = 3.0, using: str | None = None):
    """Decorator form of `retry_on_lock`: `@retrying_on_lock` or `@retrying_on_lock(attempts=8)`."""
    def wrap(f):
        @functools.wraps(f)
        def inner(*args, **kwargs):
            return retry_on_lock(functools.partial(f, *args, **kwargs), attempts=attempts,
                                 backoff=backoff, max_backoff=max_backoff, using=using)
        return inner
    return wrap(func) if func is not None else wrap
