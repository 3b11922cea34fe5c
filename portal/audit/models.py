from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """An audit event was about to be changed or deleted."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("audit events are append-only")

    def delete(self):
        raise AppendOnlyError("audit events are append-only")

    def bulk_create(self, *args, **kwargs):
        raise AppendOnlyError("audit events are chained one by one: use portal.audit.services.record")


class AuditEvent(models.Model):
    """Who did what to which object, when. Rows are only ever added."""

    # Set by services.record before hashing (auto_now_add would overwrite it after the hash).
    at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    # PROTECT, not SET_NULL: the table refuses UPDATE, so a person who appears in the trail is
    # deactivated, never deleted.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="+")
    actor_name = models.CharField(max_length=150, help_text="Username at the time, kept if the user goes.")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False, help_text="Hash of the previous event.")
    hash = models.CharField(max_length=64, editable=False,
                            help_text="sha256 over this event's fields and prev_hash (portal.audit.chain).")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise AppendOnlyError("audit events are append-only")
        if not self.hash or not self.prev_hash:
            raise AppendOnlyError("audit events are chained: write them with portal.audit.services.record")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events are append-only")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.object_type}:{self.object_id}"
