"""Database triggers that make the audit table append-only: UPDATE and DELETE on
`audit_auditevent` fail on PostgreSQL and SQLite, whoever issues them (ORM, raw SQL, a shell);
on PostgreSQL TRUNCATE too (SQLite has no TRUNCATE: it empties a table with DELETE).

The application has no switch to turn them off. Only the test harness removes them, and only
inside the single transaction in which Django's `flush` empties every table between
transactional tests (see `allow_test_flush`). Whoever can run DDL as the table's owner can still
drop them; running the portal under a database role that does not own its tables (migrations
under the owner) closes that too. Either way the hash chain (`portal.audit.chain`,
`manage.py audit_verify`) shows an edit made that way, and `audit_verify` fails when the
triggers are missing.
"""
from __future__ import annotations

TABLE = "audit_auditevent"
MESSAGE = "audit events are append-only"

SQLITE_TRIGGERS = {
    "audit_auditevent_no_update":
        f"CREATE TRIGGER IF NOT EXISTS audit_auditevent_no_update BEFORE UPDATE ON {TABLE} "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
    "audit_auditevent_no_delete":
        f"CREATE TRIGGER IF NOT EXISTS audit_auditevent_no_delete BEFORE DELETE ON {TABLE} "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
}

POSTGRES_INSTALL = [
    f"""CREATE OR REPLACE FUNCTION audit_auditevent_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{MESSAGE} (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$""",
    f"DROP TRIGGER IF EXISTS audit_auditevent_append_only ON {TABLE}",
    f"""CREATE TRIGGER audit_auditevent_append_only BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION audit_auditevent_append_only()""",
    f"DROP TRIGGER IF EXISTS audit_auditevent_no_truncate ON {TABLE}",
    f"""CREATE TRIGGER audit_auditevent_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_auditevent_append_only()""",
]
POSTGRES_REMOVE = [
    f"DROP TRIGGER IF EXISTS audit_auditevent_append_only ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_auditevent_no_truncate ON {TABLE}",
    "DROP FUNCTION IF EXISTS audit_auditevent_append_only()",
]


def install_sql(vendor: str) -> list[str]:
    if vendor == "sqlite":
        return list(SQLITE_TRIGGERS.values())
    if vendor == "postgresql":
        return list(POSTGRES_INSTALL)
    raise NotImplementedError(f"no append-only triggers for the {vendor!r} database backend")


def remove_sql(vendor: str) -> list[str]:
    if vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS]
    if vendor == "postgresql":
        return list(POSTGRES_REMOVE)
    raise NotImplementedError(f"no append-only triggers for the {vendor!r} database backend")


def install(connection) -> None:
    """Create the triggers (idempotent; one transaction, so no moment without them)."""
    from django.db import transaction

    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for sql in install_sql(connection.vendor):
            cursor.execute(sql)


def remove(connection) -> None:
    with connection.cursor() as cursor:
        for sql in remove_sql(connection.vendor):
            cursor.execute(sql)


def installed(connection) -> bool:
    """True when the append-only triggers are present on the audit table."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE])
            return set(SQLITE_TRIGGERS) <= {row[0] for row in cursor.fetchall()}
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                           [TABLE])
            return {"audit_auditevent_append_only", "audit_auditevent_no_truncate"} <= {
                row[0] for row in cursor.fetchall()}
    return False


def ensure_installed(sender=None, using="default", **kwargs) -> None:
    """post_migrate: put the triggers back if a table rebuild (SQLite ALTER) dropped them."""
    from django.db import connections

    connection = connections[using]
    if (connection.vendor in ("sqlite", "postgresql") and TABLE in connection.introspection.table_names()
            and not installed(connection)):
        install(connection)


def allow_test_flush() -> None:
    """Test harness only (called by the `portal.testing` pytest plugin): Django's flush empties
    tables with DELETE (SQLite) or TRUNCATE (PostgreSQL), which the triggers refuse. Wrap the
    flush statements so the triggers are dropped and re-created inside the same transaction."""
    from django.core.management.commands import flush

    original = flush.sql_flush
    if getattr(original, "_audit_wrapped", False):
        return

    def sql_flush(style, connection, *args, **kwargs):
        statements = original(style, connection, *args, **kwargs)
        if connection.vendor not in ("sqlite", "postgresql") or not any(TABLE in s for s in statements):
            return statements
        return remove_sql(connection.vendor) + list(statements) + install_sql(connection.vendor)

    sql_flush._audit_wrapped = True
    flush.sql_flush = sql_flush
