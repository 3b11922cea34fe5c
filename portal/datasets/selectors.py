from portal.datasets.models import Dataset


def datasets_visible_to(user):
    qs = Dataset.objects.select_related("node", "node__organisation")
    if user.has_perm("studies.view_modelversion") or user.has_perm("nodes.approve_workernode"):
        return qs
    return qs.filter(node__organisation=user.organisation)
