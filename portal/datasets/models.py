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

    class Meta:
        ordering = ["node__name", "name", "-version"]
        constraints = [models.UniqueConstraint(fields=["node", "name", "version"], name="dataset_version_unique")]
        permissions = [("announce_dataset", "Can announce dataset metadata (node agents)")]

    def __str__(self) -> str:
        return f"{self.node.name}/{self.name} v{self.version}"
