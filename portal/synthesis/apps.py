from django.apps import AppConfig


class SynthesisConfig(AppConfig):
    name = "portal.synthesis"
    label = "synthesis"
    verbose_name = "Synthetic cohorts"
