from portal.nodes.models import WorkerNode


def nodes_visible_to(user):
    qs = WorkerNode.objects.select_related("organisation")
    if user.has_perm("nodes.approve_workernode") or user.has_perm("studies.add_study") \
            or user.has_perm("studies.view_modelversion"):
        return qs
    return qs.filter(organisation=user.organisation)
