"""What each role's home page shows first: the items that need their attention."""
from __future__ import annotations

from portal.accounts import roles as R
from portal.datasets.selectors import datasets_visible_to
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import nodes_visible_to
from portal.studies.models import Run, Study
from portal.studies.selectors import runs_visible_to, studies_visible_to
from portal.synthesis.models import SyntheticCohort


def dashboard_for(user, roles: list[str]) -> dict:
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
        out["cohorts_ready"] = list(SyntheticCohort.objects.filter(released=True)[:10])
    return out


def approvals_awaited_by(user) -> list[tuple]:
    """(study, dataset) pairs where `user`'s organisation holds a participating dataset with no
    decision yet: the node operator's to-do list."""
    org = getattr(user, "organisation_id", None)
    if org is None:
        return []
    pairs = []
    for study in Study.objects.filter(datasets__node__organisation_id=org).distinct().prefetch_related(
            "datasets__node", "approvals"):
        decided = {a.dataset_id for a in study.approvals.all()}
        for ds in study.datasets.all():
            if ds.node.organisation_id == org and ds.pk not in decided:
                pairs.append((study, ds))
    return pairs


def studies_waiting_for_approval(user) -> list:
    """Studies owned by `user` with at least one participating dataset not yet approved."""
    out = []
    for study in Study.objects.filter(owner=user).prefetch_related("datasets", "approvals"):
        approved = {a.dataset_id for a in study.approvals.all() if a.decision == "approved"}
        if any(d.pk not in approved for d in study.datasets.all()):
            out.append(study)
    return out
