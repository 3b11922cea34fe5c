from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The portal's kernel: helpers every app may use (API errors and permissions, live progress,
    lock retries, private files, throttling, use-case choices). It imports no app (an
    import-linter contract in pyproject.toml holds it); what sits on top lives in portal.ops."""

    name = "portal.core"
    label = "core"
    verbose_name = "FedHaem core"
