from django.db import models

from portal.studies.models import Run


class SyntheticCohort(models.Model):
    """A synthetic cohort produced by a generation run, with its SAFE validation report."""

    class Generator(models.TextChoices):
        CTGAN = "ctgan", "CTGAN (federated)"
        BAYESIAN_NETWORK = "bayesian_network", "Bayesian network"
        VAE_BGM = "vae_bgm", "VAE-BGM"
        SD_SHARING = "sd_sharing", "Synthetic-data sharing"

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="synthetic_cohorts")
    generator = models.CharField(max_length=20, choices=Generator.choices)
    file = models.FileField(upload_to="synthetic/", blank=True)
    row_count = models.PositiveIntegerField(default=0)
    validation_report = models.JSONField(default=dict, blank=True)
    data_card = models.JSONField(default=dict, blank=True)
    released = models.BooleanField(default=False, help_text="Passed the privacy gate; downloadable.")
    released_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("download_syntheticcohort", "Can download released synthetic cohorts")]

    def __str__(self) -> str:
        return f"{self.get_generator_display()} cohort of run {self.run_id}"
