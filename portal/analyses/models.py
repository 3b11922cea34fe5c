from django.db import models

from portal.studies.models import Run


class AnalysisReport(models.Model):
    """What a finished analysis run computed across the hospitals: its analysis.json (version 1,
    fl_engine.federation.analysis), aggregates only (no patient row, no raw time)."""

    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="analysis_report")
    content = models.JSONField(help_text="The run's analysis.json, validated (portal.analyses.report).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Analysis report of run {self.run_id}"
