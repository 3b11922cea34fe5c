"""The embedded SQLite takes concurrent writers: WAL, BEGIN IMMEDIATE and a busy timeout from
settings, and portal.core.db.retry_on_lock for what still loses the race. Real files, real
processes and threads; no database fixture needed."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A writer process: the read-then-write transaction that died in execute_run (update_or_create
# reads, then writes), done `n` times against the portal's own settings.
WRITER = r"""
import sys, time, django
django.setup()
from django.db import connection, transaction
who, n = sys.argv[1], int(sys.argv[2])
with connection.cursor() as c:
    c.execute("CREATE TABLE IF NOT EXISTS counter (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    c.execute("CREATE TABLE IF NOT EXISTS rows (who TEXT, i INTEGER, PRIMARY KEY (who, i))")
for i in range(n):
    with transaction.atomic():
        with connection.cursor() as c:
            c.execute("SELECT n FROM counter WHERE k = 'x'")
            row = c.fetchone()
            time.sleep(0.002)  # widen the window between the read and the write
            if row is None:
                c.execute("INSERT INTO counter (k, n) VALUES ('x', 1)")
            else:
                c.execute("UPDATE counter SET n = %s WHERE k = 'x'", [row[0] + 1])
            c.execute("INSERT INTO rows (who, i) VALUES (%s, %s)", [who, i])
print("ok", who)
"""


def _env(var_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update({"FEDHAEM_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings"})
    return env


def test_settings_open_sqlite_in_wal_with_immediate_transactions(tmp_path):
    code = ("import django; django.setup(); from django.db import connection; "
            "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0]); "
            "c.execute('PRAGMA synchronous'); print(c.fetchone()[0]); "
            "c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0]); print(connection.transaction_mode)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mode, synchronous, busy_ms, tx = out.stdout.split()
    assert (mode, synchronous, tx) == ("wal", "1", "IMMEDIATE")  # synchronous 1 = NORMAL
    assert int(busy_ms) >= 10_000


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    writers, n = 3, 150
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"w{k}", str(n)], env=_env(tmp_path), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(writers)]
    results = [p.communicate(timeout=180) for p in procs]
    elapsed = time.monotonic() - t0
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    db = sqlite3.connect(tmp_path / "fedhaem.sqlite3")
    assert db.execute("SELECT n FROM counter WHERE k = 'x'").fetchone()[0] == writers * n  # no lost update
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == writers * n
    print(f"{writers} processes x {n} read-then-write transactions in {elapsed:.1f} s")


def _two_transactions(path: Path, begin: str) -> list[str]:
    """Transaction A reads, B writes and commits, then A writes: what each of them got."""
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, n INTEGER)")
    setup.execute("INSERT OR REPLACE INTO t VALUES (1, 0)")
    setup.commit()
    setup.close()
    outcome: list[str] = []
    a_read, b_done = threading.Event(), threading.Event()

    def a():
        c = sqlite3.connect(path, timeout=5, isolation_level=None)
        c.execute(begin)
        n = c.execute("SELECT n FROM t WHERE k = 1").fetchone()[0]
        a_read.set()
        b_done.wait(1.0)  # B writes meanwhile (or, blocked at BEGIN IMMEDIATE, cannot)
        try:
            c.execute("UPDATE t SET n = ? WHERE k = 1", (n + 1,))
            c.execute("COMMIT")
            outcome.append("A ok")
        except sqlite3.OperationalError as exc:
            outcome.append(f"A {exc}")
            c.execute("ROLLBACK")

    def b():
        a_read.wait()
        c = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            c.execute(begin)
            n = c.execute("SELECT n FROM t WHERE k = 1").fetchone()[0]
            c.execute("UPDATE t SET n = ? WHERE k = 1", (n + 1,))
            c.execute("COMMIT")
            outcome.append("B ok")
        except sqlite3.OperationalError as exc:
            outcome.append(f"B {exc}")
        b_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return outcome


def test_deferred_upgrade_fails_immediate_waits(tmp_path):
    # Why transaction_mode IMMEDIATE: a DEFERRED transaction that read before another writer
    # committed cannot upgrade to a write, and the busy timeout does not help.
    deferred = _two_transactions(tmp_path / "d.sqlite3", "BEGIN DEFERRED")
    assert "B ok" in deferred and any("locked" in o for o in deferred if o.startswith("A")), deferred
    immediate = _two_transactions(tmp_path / "i.sqlite3", "BEGIN IMMEDIATE")
    assert immediate == ["A ok", "B ok"]  # B waited for A's commit
    assert sqlite3.connect(tmp_path / "i.sqlite3").execute("SELECT n FROM t").fetchone()[0] == 2


@pytest.mark.django_db(transaction=True)
def test_retry_on_lock_outlasts_a_long_write_lock():
    from django.db import OperationalError, connection, transaction

    from portal.core.db import retry_on_lock

    if connection.vendor != "sqlite":
        pytest.skip(f"SQLite's write lock: the embedded default only (this run's database is {connection.vendor})")
    with connection.cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS lockprobe (i INTEGER)")
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write
    released = threading.Timer(0.8, lambda: holder.execute("ROLLBACK"))
    calls = []

    def write():
        calls.append(time.monotonic())
        with connection.cursor() as c:
            c.execute("PRAGMA busy_timeout = 100")  # shorter than the lock: lose the race first
            with transaction.atomic():
                c.execute("INSERT INTO lockprobe VALUES (1)")
        return "written"

    released.start()
    try:
        assert retry_on_lock(write, attempts=10, backoff=0.1) == "written"
    finally:
        released.join()
        holder.close()
        with connection.cursor() as c:
            c.execute("PRAGMA busy_timeout = 20000")
    assert len(calls) >= 2  # it did lose, and retried


def test_retrying_on_lock_retries_only_a_lock():
    from django.db import OperationalError

    from portal.core.db import retrying_on_lock

    calls = []
    failures = iter([OperationalError("database is locked")] * 2)

    @retrying_on_lock(attempts=3, backoff=0.01)
    def flaky(x):
        err = next(failures, None)
        if err:
            raise err
        return x * 2

    assert flaky(21) == 42

    @retrying_on_lock(attempts=3, backoff=0.01)
    def other():
        calls.append("other")
        raise OperationalError("no such table: nope")

    n = len(calls)
    with pytest.raises(OperationalError, match="no such table"):
        other()
    assert len(calls) == n + 1  # not a lock error: no retry


def test_retry_inside_an_outer_transaction_is_left_to_its_owner(db):
    from django.db import OperationalError, transaction

    from portal.core.db import retry_on_lock

    calls = []

    def locked():
        calls.append(1)
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError), transaction.atomic():
        retry_on_lock(locked, attempts=5, backoff=0.01)
    assert len(calls) == 1


def test_postgres_serialization_failure_is_retryable():
    from django.db import OperationalError

    from portal.core.db import is_lock_error

    class Cause(Exception):
        sqlstate = "40001"

    err = OperationalError("could not serialize access")
    err.__cause__ = Cause()
    assert is_lock_error(err)
    err.__cause__.sqlstate = "57014"  # query cancelled: not a race
    assert not is_lock_error(err)
    assert not is_lock_error(ValueError("database is locked"))
