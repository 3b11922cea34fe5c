from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations, on top of every other app: the home dashboard, the health endpoint, the
    demo (`manage.py demo`, `manage.py seed_demo`, its supervisor, embedded Redis and federation)."""

    name = "portal.ops"
    label = "ops"
    verbose_name = "FedHaem operations"
