"""The audit trail is append-only in the database (triggers refuse raw UPDATE and DELETE) and a
hash chain shows any edit made by someone who removed the triggers (`manage.py audit_verify`)."""
from __future__ import annotations

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from portal.audit import db_guard
from portal.audit.models import AppendOnlyError, AuditEvent
from portal.audit.services import record

TABLE = db_guard.TABLE


@pytest.fixture
def events(db, personas):
    admin = personas["administrator"]
    return [record(admin, "study.create", personas["clinician"], {"n": 1, "name": "A"}),
            record(None, "node.approve", None, {"nested": {"b": [1, 2.5, "x"], "a": None}}),
            record(admin, "cohort.download", personas["coordinator"], {"rows": 300})]


def _raw(sql, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_triggers_are_installed_by_migrate(db):
    assert db_guard.installed(connection)


def test_raw_sql_update_is_refused(events):
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"UPDATE {TABLE} SET action = 'nothing.happened' WHERE id = %s", [events[0].pk])
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"UPDATE {TABLE} SET actor_id = NULL")
    assert AuditEvent.objects.get(pk=events[0].pk).action == "study.create"


def test_raw_sql_delete_is_refused(events):
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"DELETE FROM {TABLE} WHERE id = %s", [events[1].pk])
    before = AuditEvent.objects.count()
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"DELETE FROM {TABLE}")
    assert AuditEvent.objects.count() == before and AuditEvent.objects.filter(pk=events[1].pk).exists()


@pytest.mark.django_db(transaction=True)
def test_truncate_is_refused_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (DELETE without WHERE is refused above)")
    event = record(None, "node.approve", None, {})  # committed: no pending constraint checks
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"TRUNCATE {TABLE} CASCADE")
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_orm_update_and_delete_are_refused(events):
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=events[0].pk).update(action="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()


def test_events_outside_the_chain_are_refused(db):
    with pytest.raises(AppendOnlyError, match="record"):
        AuditEvent.objects.create(actor_name="x", action="forged")
    with pytest.raises(AppendOnlyError, match="record"):
        AuditEvent.objects.bulk_create([AuditEvent(actor_name="x", action="forged")])


def test_a_person_in_the_trail_cannot_be_deleted(events, personas):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        personas["administrator"].delete()


def test_events_chain_and_audit_verify_passes(events, capsys):
    first = AuditEvent.objects.order_by("id").first()
    assert first.prev_hash == "0" * 64
    previous = AuditEvent.objects.filter(id__lt=events[0].pk).order_by("-id").values_list("hash", flat=True).first()
    assert events[0].prev_hash == (previous or "0" * 64)
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert f"{AuditEvent.objects.count()} events" in out and events[2].hash in out


def _tamper(sql, params=()):
    """What someone with DDL rights could do: drop the triggers, then edit."""
    db_guard.remove(connection)
    _raw(sql, params)
    db_guard.install(connection)


def test_audit_verify_names_the_edited_event(events):
    _tamper(f"UPDATE {TABLE} SET detail = %s WHERE id = %s", ['{"rows": 3}', events[2].pk])
    with pytest.raises(CommandError, match=rf"event {events[2].pk} .*edited"):
        call_command("audit_verify")


def test_audit_verify_names_the_event_after_a_deleted_one(events):
    _tamper(f"DELETE FROM {TABLE} WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=rf"event {events[2].pk} .*removed"):
        call_command("audit_verify")


def test_audit_verify_notices_an_edited_actor(events, personas):
    _tamper(f"UPDATE {TABLE} SET actor_name = 'clinician', actor_id = %s WHERE id = %s",
            [personas["clinician"].pk, events[0].pk])
    with pytest.raises(CommandError, match=rf"event {events[0].pk} "):
        call_command("audit_verify")


def test_audit_verify_fails_when_the_triggers_are_gone(events):
    db_guard.remove(connection)
    with pytest.raises(CommandError, match="triggers .* missing"):
        call_command("audit_verify")
    db_guard.install(connection)


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_fork_the_chain():
    """Two writers (own connections, as two processes would have) append at once."""
    from django.db import connections

    errors = []

    def write(tag):
        try:
            for i in range(15):
                record(None, f"test.{tag}", None, {"i": i})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert AuditEvent.objects.filter(action__startswith="test.").count() == 30
    prevs = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prevs)) == len(prevs)  # no two events share a predecessor
    call_command("audit_verify")
    # Teardown flushes this database (DELETE on SQLite): the harness must let that through.
