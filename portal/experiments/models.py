from django.conf import settings
from django.db import models

from portal.studies.models import Study
from portal.synthesis.models import SyntheticCohort


class GridRun(models.Model):
    """One run of the experiment grid (fl_engine.experiments.grid) on the manager, on pooled data
    the manager may hold: the generated MDS cohort or a released synthetic cohort of the study."""

    class Source(models.TextChoices):
        GENERATED = "generated", "Generated MDS cohort (teaching / demonstration)"
        SYNTHETIC = "synthetic", "Released synthetic cohort of the study"

    class Status(models.TextChoices):
        # the states of every run (portal.studies.lifecycle)
        QUEUED = "queued", "Queued"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        CONCLUDING = "concluding", "Storing results"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.STARTING, Status.RUNNING, Status.CONCLUDING)
    FINAL = (Status.FINISHED, Status.FAILED, Status.CANCELLED)

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="grid_runs")
    source = models.CharField(max_length=10, choices=Source.choices)
    synthetic_cohort = models.ForeignKey(SyntheticCohort, on_delete=models.PROTECT, null=True, blank=True,
                                         related_name="grid_runs")
    generated_n = models.PositiveIntegerField(null=True, blank=True, help_text="Patients of the generated cohort.")
    generated_seed = models.PositiveIntegerField(null=True, blank=True, help_text="Seed of the generated cohort.")
    config = models.JSONField(default=dict, help_text="The grid's settings (GridConfig fields), validated.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    progress = models.TextField(blank=True, help_text="The grid's log lines so far (one per setting).")
    error = models.TextField(blank=True)
    results = models.JSONField(default=dict, blank=True,
                               help_text="summary, per_seed, rounds and km (portal.experiments.services).")
    task_id = models.CharField(max_length=64, blank=True)
    # The lifecycle's bookkeeping: when the status last changed, when the worker computing the grid
    # last said it is alive, and how many workers have taken it up (a worker that died is replaced).
    status_changed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grid_runs")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Grid {self.pk} of {self.study}"

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE
