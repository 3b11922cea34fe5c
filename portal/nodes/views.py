"""Worker-node page: status and heartbeats for everyone allowed; approve / revoke for administrators."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.datasets.selectors import datasets_visible_to
from portal.nodes import services
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import dataset_spend, nodes_visible_to


@login_required
def node_list(request):
    if not request.user.has_perm("nodes.view_workernode"):
        raise PermissionDenied
    nodes = list(nodes_visible_to(request.user))
    counts = {}
    for ds in datasets_visible_to(request.user):
        counts.setdefault(ds.node_id, []).append(ds)
    return render(request, "nodes/node_list.html", {
        # each dataset with the ledger summary its node last reported (None: not reported)
        "rows": [(n, [(d, dataset_spend(n, d.name)) for d in counts.get(n.pk, [])]) for n in nodes],
        "can_approve": request.user.has_perm("nodes.approve_workernode"),
        "token": request.session.pop("node_token", None),
    })


@login_required
@require_POST
def node_approve(request, pk: int):
    if not request.user.has_perm("nodes.approve_workernode"):
        raise PermissionDenied
    node = get_object_or_404(WorkerNode, pk=pk)
    try:
        token = services.approve_node(request.user, node)
    except services.NodeStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Node {node.name} approved.")
        # Shown once, on the next page only; the node operator puts it in the node's config.
        request.session["node_token"] = {"node": node.name, "token": token}
    return redirect("page-node-list")


@login_required
@require_POST
def node_revoke(request, pk: int):
    if not request.user.has_perm("nodes.approve_workernode"):
        raise PermissionDenied
    node = get_object_or_404(WorkerNode, pk=pk)
    try:
        services.revoke_node(request.user, node, request.POST.get("reason", "")[:500])
    except services.NodeStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Node {node.name} revoked: it can no longer join rounds.")
    return redirect("page-node-list")
