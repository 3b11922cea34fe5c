from django.db.models import Q

from portal.nodes.models import WorkerNode


def nodes_visible_to(user):
    qs = WorkerNode.objects.select_related("organisation")
    if user.has_perm("nodes.approve_workernode") or user.has_perm("studies.add_study") \
            or user.has_perm("studies.view_modelversion"):
        return qs
    return qs.filter(organisation=user.organisation)


def nodes_out_of_sync():
    """Nodes whose SuperLink registration does not match the portal: approved without a Flower
    node id (key not registered yet), or revoked while still registered."""
    return WorkerNode.objects.filter(
        Q(status=WorkerNode.Status.APPROVED, flower_node_id="", key_retired=False)
        | Q(status=WorkerNode.Status.REVOKED) & ~Q(flower_node_id=""))
