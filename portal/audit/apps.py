from django.apps import AppConfig
from django.db.models.signals import post_migrate

from portal.audit import db_guard


class AuditConfig(AppConfig):
    name = "portal.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        post_migrate.connect(db_guard.ensure_installed, sender=self,
                             dispatch_uid="portal.audit.append_only_triggers")
