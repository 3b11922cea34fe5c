"""Who sees which dataset, and who may register one.

A dataset a node announced enters the catalogue when a clinician of the node's hospital registers
it (`Dataset.catalogued_at`). Until then only people of that hospital see the announcement.
Registered datasets follow the catalogue's usual scoping: roles that read the science (and
administrators) see every hospital's; node operators see their own hospital's.
"""
from django.db.models import Q

from portal.accounts.roles import CLINICIAN, user_roles
from portal.datasets.models import Dataset


def _own_hospital(user) -> Q:
    org = getattr(user, "organisation_id", None)
    return Q(node__organisation_id=org) if org is not None else Q(pk__in=[])


def datasets_visible_to(user):
    qs = Dataset.objects.select_related("node", "node__organisation", "catalogued_by")
    if user.has_perm("studies.view_modelversion") or user.has_perm("nodes.approve_workernode"):
        return qs.filter(Q(catalogued_at__isnull=False) | _own_hospital(user))
    return qs.filter(_own_hospital(user))


def announcements_to_register(user):
    """The announced, not yet registered dataset versions of the user's hospital (newest first)."""
    return (Dataset.objects.select_related("node", "node__organisation")
            .filter(_own_hospital(user), catalogued_at__isnull=True).order_by("node__name", "name", "-version"))


def can_register(user, ds: Dataset) -> bool:
    """A clinician of the hospital holding the dataset registers it and changes its registration."""
    return (getattr(user, "is_authenticated", False) and CLINICIAN in user_roles(user)
            and getattr(user, "organisation_id", None) == ds.node.organisation_id)
