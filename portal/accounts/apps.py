from django.apps import AppConfig
from django.db.models.signals import post_migrate

from portal.accounts.roles import ensure_role_groups


class AccountsConfig(AppConfig):
    name = "portal.accounts"
    label = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        post_migrate.connect(lambda **kw: ensure_role_groups(), dispatch_uid="fedhaem-roles", weak=False)

        from portal.accounts import audit_signals  # Django: models are not ready when apps.py is imported

        audit_signals.connect()
