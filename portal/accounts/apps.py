from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "portal.accounts"
    label = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from portal.accounts.roles import ensure_role_groups

        post_migrate.connect(lambda **kw: ensure_role_groups(), dispatch_uid="fedhaem-roles", weak=False)

        from portal.accounts import audit_signals

        audit_signals.connect()
