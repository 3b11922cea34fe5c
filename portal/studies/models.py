from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from portal.accounts.models import Organisation
from portal.core.choices import UseCase
from portal.datasets.models import Dataset
from portal.studies.config import (FRACTION_NODES, MIN_NODES, ROUNDS, default_privacy, model_privacy_error,
                                   validate_features, validate_hyperparameters, validate_privacy)


class Study(models.Model):
    """A federated study: what to learn, from which datasets, and how."""

    class ModelKind(models.TextChoices):
        DEEPSURV = "deepsurv", "DeepSurv (neural Cox model)"
        SAVAE = "savae", "SAVAE (variational autoencoder with Weibull time)"
        COX = "cox", "Cox proportional hazards (penalised, exact federated Newton steps)"

    class Strategy(models.TextChoices):
        FEDAVG = "fedavg", "FedAvg weighted by patients"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        READY = "ready", "Ready"
        ARCHIVED = "archived", "Archived"

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    use_case = models.CharField(max_length=8, choices=UseCase.choices)
    endpoint = models.CharField(max_length=16, default="os", help_text="Survival endpoint, e.g. os, lfs, amlt.")
    feature_groups = models.JSONField(default=list, blank=True,
                                      help_text="Feature groups used: clinical, cytogenetic, genomic, embedding, therapy.")
    features = models.JSONField(default=list, blank=True, help_text="Explicit feature columns (overrides groups).")
    model_kind = models.CharField(max_length=16, choices=ModelKind.choices, default=ModelKind.DEEPSURV)
    hyperparameters = models.JSONField(default=dict, blank=True)
    datasets = models.ManyToManyField(Dataset, related_name="studies", blank=True)
    rounds = models.PositiveSmallIntegerField(default=5)
    fraction_nodes = models.FloatField("fraction of nodes per round", default=1.0)
    min_nodes = models.PositiveSmallIntegerField("minimum available nodes", default=2)
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.FEDAVG)
    privacy = models.JSONField(default=default_privacy, blank=True,
                               help_text="Privacy options (portal.studies.config.PrivacyOptions).")
    analysis = models.JSONField(default=dict, blank=True,
                                help_text="Federated analysis settings (descriptive statistics, Kaplan-Meier, "
                                          "log-rank, exact Cox); empty when the study runs no analysis.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="studies")
    organisation = models.ForeignKey(Organisation, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        permissions = [("approve_study", "Can approve studies on their node's datasets")]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        errors = {}
        try:
            self.hyperparameters = validate_hyperparameters(self.model_kind, self.hyperparameters)
        except ValueError as exc:
            errors["hyperparameters"] = str(exc)
        try:
            self.privacy = validate_privacy(self.privacy)
        except ValueError as exc:
            errors["privacy"] = str(exc)
        if "privacy" not in errors and model_privacy_error(self.model_kind, self.privacy):
            errors["privacy"] = model_privacy_error(self.model_kind, self.privacy)
        try:
            self.features = validate_features(self.features)
        except ValueError as exc:
            errors["features"] = str(exc)
        for field, setting in (("fraction_nodes", FRACTION_NODES), ("rounds", ROUNDS), ("min_nodes", MIN_NODES)):
            why = setting.check(getattr(self, field))
            if why:
                errors[field] = why
        if errors:
            raise ValidationError(errors)


class StudyApproval(models.Model):
    """A node operator's decision to let a study train on one of their datasets."""

    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="approvals")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="approvals")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(auto_now=True)
    comment = models.TextField(blank=True)
    # fl_engine.federation.approval.approval_hash of the study's settings when decided: a later
    # change to a run-relevant setting leaves the approval stale (it no longer lets runs start,
    # and the node refuses runs whose settings it does not match).
    settings_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "dataset"], name="one_decision_per_dataset")]


class Run(models.Model):
    """One execution of a study on the federation."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        CONCLUDING = "concluding", "Concluding"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.STARTING, Status.RUNNING, Status.CONCLUDING)
    FINAL = (Status.FINISHED, Status.FAILED, Status.CANCELLED)

    class Kind(models.TextChoices):
        SURVIVAL = "survival", "Survival model"
        SYNTHESIS = "synthesis", "Synthetic cohort generation"
        ANALYSIS = "analysis", "Federated analysis"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="runs")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SURVIVAL, db_index=True,
                            help_text="What the run produces: a survival model, a synthetic cohort or an analysis report.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    rounds = models.PositiveSmallIntegerField()
    config = models.JSONField(default=dict, help_text="Snapshot of the study settings and dataset versions used.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="runs")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Flower run ids are unsigned 64-bit integers: stored as text.
    flower_run_id = models.CharField(max_length=20, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # When the status last changed and when the start task was last queued: the reconciler
    # re-queues lost work and fails what is stuck (portal.studies.lifecycle).
    status_changed_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    last_event_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("cancel_run", "Can cancel runs")]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.study}"

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE


class RunEvent(models.Model):
    """One numbered event a run's ServerApp reported (by POST or found in its log on replay):
    stored once per (run, seq), so ingesting it twice changes nothing."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=12)
    body = models.JSONField(default=dict)
    source = models.CharField(max_length=8, default="push", help_text="push (POST) or log (replay).")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="run_event_once")]


class RoundMetric(models.Model):
    """One value of one metric for one round, for one node or for the federation ("global")."""

    GLOBAL = "global"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metrics")
    round = models.PositiveSmallIntegerField()
    node = models.CharField(max_length=60, help_text='Worker-node name, or "global".')
    name = models.CharField(max_length=40)
    value = models.FloatField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "round", "node", "name"]
        constraints = [models.UniqueConstraint(fields=["run", "round", "node", "name"], name="metric_unique")]


class ModelVersion(models.Model):
    """The global model of a finished run as registered in MLflow's model registry."""

    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="model_version")
    mlflow_run_id = models.CharField(max_length=64)
    registered_model_name = models.CharField(max_length=200)
    version = models.CharField(max_length=20)
    artifact_uri = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Coordinators' tags ({key: value}), mirrored on the MLflow model version; every change is
    # audited with its reason (portal.studies.registry).
    tags = models.JSONField(default=dict, blank=True)
    # What produced the model, captured when it was registered (portal.studies.capsule.lineage):
    # the run's engine contract, code identity, package versions, seeds and dataset fingerprints.
    lineage = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.registered_model_name} v{self.version}"


class ModelAlias(models.Model):
    """A named pointer (candidate, champion, ...) to one version of a registered model: one
    version holds an alias at a time; MLflow's registry holds the same alias. Moves are audited
    (`model.alias`, from/to version, who, reason)."""

    registered_model_name = models.CharField(max_length=200)
    alias = models.CharField(max_length=40)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    set_at = models.DateTimeField(auto_now=True)
    reason = models.TextField()

    class Meta:
        ordering = ["registered_model_name", "alias"]
        constraints = [models.UniqueConstraint(fields=["registered_model_name", "alias"],
                                               name="one_version_per_alias")]

    def __str__(self) -> str:
        return f"{self.registered_model_name}@{self.alias}"
