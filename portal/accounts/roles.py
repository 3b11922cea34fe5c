"""The five roles, their Django groups and explicit permissions.

The identity provider puts role names in a claim of the ID token / userinfo (`OIDC_ROLES_CLAIM`,
default ``roles``); `portal.accounts.oidc` maps them onto these groups at every login.
"""
from __future__ import annotations

CLINICIAN = "clinician"
COORDINATOR = "coordinator"
DATA_MANAGER = "data_manager"
NODE_OPERATOR = "node_operator"
ADMINISTRATOR = "administrator"
NODE_AGENT = "node_agent"  # worker-node service accounts, not a person's role

ROLE_LABELS = {
    CLINICIAN: "Clinician",
    COORDINATOR: "Study coordinator",
    DATA_MANAGER: "Data manager",
    NODE_OPERATOR: "Node operator",
    ADMINISTRATOR: "Administrator",
}
ROLES = tuple(ROLE_LABELS)

_VIEW_SCIENCE = [
    "studies.view_study", "studies.view_run", "studies.view_roundmetric",
    "studies.view_modelversion", "datasets.view_dataset", "nodes.view_workernode",
    "accounts.view_organisation",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    CLINICIAN: _VIEW_SCIENCE + ["synthesis.view_syntheticcohort"],
    COORDINATOR: _VIEW_SCIENCE + [
        "studies.add_study", "studies.change_study", "studies.add_run", "studies.cancel_run",
        "studies.change_modelversion",  # model aliases and tags (audited, with a reason)
        "synthesis.view_syntheticcohort", "synthesis.add_syntheticcohort",
    ],
    DATA_MANAGER: _VIEW_SCIENCE + [
        "synthesis.view_syntheticcohort", "synthesis.download_syntheticcohort",
    ],
    NODE_OPERATOR: [
        "nodes.view_workernode", "datasets.view_dataset", "studies.view_study",
        "studies.view_run", "studies.view_roundmetric", "studies.approve_study",
        "accounts.view_organisation",
    ],
    ADMINISTRATOR: _VIEW_SCIENCE + [
        "nodes.add_workernode", "nodes.change_workernode", "nodes.approve_workernode",
        "accounts.add_organisation", "accounts.change_organisation",
        "accounts.view_user", "accounts.change_user", "audit.view_auditevent",
        "synthesis.view_syntheticcohort",
    ],
    NODE_AGENT: ["nodes.report_heartbeat", "datasets.announce_dataset"],
}


def ensure_role_groups() -> None:
    """Create or update one Django group per role with exactly its permissions (idempotent)."""
    from django.contrib.auth.models import Group, Permission

    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            try:
                wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
            except Permission.DoesNotExist:
                # Before every app's migrations ran (first post_migrate); the last call fixes it.
                continue
        group.permissions.set(wanted)


def user_roles(user) -> list[str]:
    """Role names held by a user (empty for anonymous users)."""
    if not getattr(user, "is_authenticated", False):
        return []
    names = set(user.groups.values_list("name", flat=True))
    return [r for r in ROLES if r in names]


def set_user_roles(user, roles: list[str]) -> None:
    """Make the user's role groups exactly `roles` (unknown names ignored); other groups kept."""
    from django.contrib.auth.models import Group

    ensure = [r for r in roles if r in ROLES]
    keep = user.groups.exclude(name__in=ROLES)
    groups = list(keep) + [Group.objects.get_or_create(name=r)[0] for r in ensure]
    user.groups.set(groups)
