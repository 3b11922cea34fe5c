from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "portal.experiments"
    label = "experiments"
    verbose_name = "Experiment grids"
