"""What each role's home page shows first: the items that need their attention."""
from __future__ import annotations

from portal.accounts import roles as R


def dashboard_for(user, roles: list[str]) -> dict:
    from portal.datasets.selectors import datasets_visible_to
    from portal.nodes.models import WorkerNode
    from portal.nodes.selectors import nodes_visible_to
    from portal.studies.models import Run
    from portal.studies.selectors import runs_visible_to, studies_visible_to

    out: dict = {}
    if user.has_perm("studies.view_run"):
        out["active_runs"] = list(runs_visible_to(user).filter(status__in=Run.ACTIVE)[:10])
        out["recent_runs"] = list(runs_visible_to(user).exclude(status__in=Run.ACTIVE)[:5])
    if user.has_perm("studies.view_study"):
        out["studies"] = list(studies_visible_to(user)[:10])
    if user.has_perm("nodes.view_workernode"):
        nodes = list(nodes_visible_to(user))
        out["nodes"] = nodes
        out["nodes_offline"] = [n for n in nodes if n.status == WorkerNode.Status.APPROVED and not n.online]
        out["nodes_pending"] = [n for n in nodes if n.status == WorkerNode.Status.PENDING]
    if R.NODE_OPERATOR in roles:
        out["datasets"] = list(datasets_visible_to(user)[:20])
    if user.has_perm("synthesis.view_syntheticcohort"):
        from portal.synthesis.models import SyntheticCohort

        out["cohorts_ready"] = list(SyntheticCohort.objects.filter(released=True)[:10])
    return out
