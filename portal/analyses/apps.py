from django.apps import AppConfig


class AnalysesConfig(AppConfig):
    name = "portal.analyses"
    label = "analyses"
    verbose_name = "Federated analyses"
