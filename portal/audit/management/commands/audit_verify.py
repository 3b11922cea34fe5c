"""Check the audit trail: the append-only triggers are in place and the hash chain holds.
Exits non-zero naming the first event that breaks the chain."""
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from portal.audit import chain, db_guard
from portal.audit.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and append-only triggers; non-zero exit on the first break."

    def handle(self, *args, **options):
        events = AuditEvent.objects.order_by("id").iterator(chunk_size=2000)
        broken = chain.first_break(events)
        if broken is not None:
            event, reason = broken
            raise CommandError(f"audit chain broken at event {event.pk} ({event.at:%Y-%m-%d %H:%M:%S} "
                               f"{event.actor_name} {event.action}): {reason}")
        if not db_guard.installed(connection):
            raise CommandError("audit chain holds, but the append-only triggers on "
                               f"{db_guard.TABLE} are missing (run `manage.py migrate`)")
        count = AuditEvent.objects.count()
        head = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or chain.GENESIS
        self.stdout.write(f"audit chain holds: {count} events, head {head}")
