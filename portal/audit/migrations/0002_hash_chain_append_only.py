"""The audit trail becomes append-only in the database: a hash chain over the events already
stored (computed once here, in id order), then triggers that refuse UPDATE and DELETE."""
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from portal.audit import chain, db_guard


def chain_existing_events(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    prev = chain.GENESIS
    for event in AuditEvent.objects.using(schema_editor.connection.alias).order_by("id").iterator():
        event.detail = chain.canonical_detail(event.detail)
        event.prev_hash = prev
        event.hash = chain.event_hash(event)
        AuditEvent.objects.using(schema_editor.connection.alias).filter(pk=event.pk).update(
            detail=event.detail, prev_hash=event.prev_hash, hash=event.hash)
        prev = event.hash


def install_triggers(apps, schema_editor):
    db_guard.install(schema_editor.connection)


def remove_triggers(apps, schema_editor):
    db_guard.remove(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="at",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="actor",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(default="", editable=False, help_text="Hash of the previous event.",
                                   max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(default="", editable=False,
                                   help_text="sha256 over this event's fields and prev_hash (portal.audit.chain).",
                                   max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(chain_existing_events, migrations.RunPython.noop),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
