from django.db import models

from portal.core.choices import UseCase
from portal.nodes.models import WorkerNode


class Dataset(models.Model):
    """One version of an ML-ready dataset held by a worker node. Metadata only: never rows."""

    node = models.ForeignKey(WorkerNode, on_delete=models.PROTECT, related_name="datasets")
    name = models.SlugField(max_length=80)
    version = models.PositiveIntegerField(default=1)
    use_case = models.CharField(max_length=8, choices=UseCase.choices)
    cdm_version = models.CharField("schema (CDM) version", max_length=16)
    patient_count = models.PositiveIntegerField()
    feature_schema = models.JSONField(default=list, help_text="Column names present in the table.")
    quality_report = models.JSONField(default=dict, blank=True, help_text="Quality summary from the node's ETL.")
    fingerprint = models.CharField(max_length=64, help_text="sha256 of the table's canonical bytes.")
    registered_at = models.DateTimeField(auto_now_add=True)
    # Filled when a clinician of the node's hospital registers the announced dataset; `policy`
    # (fl_engine.node.policy, validated) is what the node fetches and applies. None = not
    # registered: the node applies fl_engine.node.policy.DEFAULT_POLICY (per-study approvals).
    title = models.CharField(max_length=200, blank=True)
    clinical_description = models.TextField(blank=True)
    inclusion_start = models.DateField(null=True, blank=True)
    inclusion_end = models.DateField(null=True, blank=True)
    contact = models.CharField(max_length=200, blank=True)
    policy = models.JSONField(null=True, blank=True)
    catalogued_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    catalogued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["node__name", "name", "-version"]
        constraints = [models.UniqueConstraint(fields=["node", "name", "version"], name="dataset_version_unique")]
        permissions = [("announce_dataset", "Can announce dataset metadata (node agents)")]

    def __str__(self) -> str:
        return f"{self.node.name}/{self.name} v{self.version}"
