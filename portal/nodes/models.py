from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.accounts.models import Organisation


class WorkerNode(models.Model):
    """A hospital's worker node: Flower SuperNode plus local dataset registry."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending approval"
        APPROVED = "approved", "Approved"
        REVOKED = "revoked", "Revoked"

    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="nodes")
    name = models.SlugField(max_length=60, unique=True)
    public_key = models.TextField(help_text="SuperNode public key (EC P-384, PEM or OpenSSH).")
    # sha256 of the key in OpenSSH form: one key, one node (a key names exactly one hospital).
    key_fingerprint = models.CharField(max_length=64, unique=True, null=True, blank=True)
    # Flower never registers a key twice, even after unregistering it: a revoked node whose key
    # was unregistered comes back only with a new key.
    key_retired = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    # Flower node ids are unsigned 64-bit integers: a string keeps all of them exact. Learnt
    # from the SuperLink when the key is registered; nothing a node says changes it.
    flower_node_id = models.CharField(max_length=20, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    last_report = models.JSONField(default=dict, blank=True, help_text="Latest heartbeat payload (metadata only).")
    # The node operator's local policy limits as the node announces them in its heartbeat, in the
    # shape of its policy-file ({"*": partial policy, "<dataset>": partial policy}; {} = none).
    policy_limits = models.JSONField(default=dict, blank=True,
                                     help_text="The node's local policy limits (its policy-file), as announced.")
    # The node's privacy-budget ledger summary per dataset as last reported (aggregates only):
    # {"datasets": [{"dataset", budget/spent epsilon and delta, "runs", "dp_runs", "charges": [...]}]}.
    privacy_spend = models.JSONField(default=dict, blank=True,
                                     help_text="The node's privacy-ledger summary per dataset, as reported.")
    privacy_reported_at = models.DateTimeField(null=True, blank=True)
    service_user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="worker_node")
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organisation__name", "name"]
        permissions = [
            ("approve_workernode", "Can approve or revoke worker nodes"),
            ("report_heartbeat", "Can report heartbeats and node state (node agents)"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.organisation})"

    @property
    def online(self) -> bool:
        if self.status != self.Status.APPROVED or self.last_heartbeat is None:
            return False
        return timezone.now() - self.last_heartbeat < timedelta(seconds=settings.NODE_HEARTBEAT_TIMEOUT_S)
