"""Database triggers that make the audit table append-only: UPDATE and DELETE on
`audit_auditevent` fail on PostgreSQL and SQLite, whoever issues them (ORM, raw SQL, a shell).

The application has no switch to turn them off. Only the test harness removes them, and only
inside the single transaction in which Django's `flush` empties every table between
transactional tests on SQLite (PostgreSQL's flush is TRUNCATE, which row triggers do not see):
see `allow_test_flush`. Whoever can run DDL as the table's owner can still drop them; a
deployment gives the portal's database role no ownership of the table (see SECURITY.md), and the
hash chain (`portal.audit.chain`, `manage.py audit_verify`) shows any edit made that way.
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
]
POSTGRES_REMOVE = [
    f"DROP TRIGGER IF EXISTS audit_auditevent_append_only ON {TABLE}",
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
    """Create the triggers (idempotent)."""
    with connection.cursor() as cursor:
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
            return "audit_auditevent_append_only" in {row[0] for row in cursor.fetchall()}
    return False


def ensure_installed(sender=None, using="default", **kwargs) -> None:
    """post_migrate: put the triggers back if a table rebuild (SQLite ALTER) dropped them."""
    from django.db import connections

    connection = connections[using]
    if connection.vendor in ("sqlite", "postgresql") and TABLE in connection.introspection.table_names():
        install(connection)


def allow_test_flush() -> None:
    """Test harness only (called by the `portal.testing` pytest plugin): SQLite's flush empties
    tables with DELETE, which the triggers refuse. Wrap the flush statements so the triggers are
    dropped and re-created inside the same transaction as the DELETEs."""
    from django.core.management.commands import flush

    original = flush.sql_flush
    if getattr(original, "_audit_wrapped", False):
        return

    def sql_flush(style, connection, *args, **kwargs):
        statements = original(style, connection, *args, **kwargs)
        if connection.vendor != "sqlite" or not any(TABLE in s for s in statements):
            return statements
        return remove_sql("sqlite") + list(statements) + install_sql("sqlite")

    sql_flush._audit_wrapped = True
    flush.sql_flush = sql_flush
