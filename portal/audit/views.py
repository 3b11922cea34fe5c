"""Audit page for administrators: filters, paging, CSV export (the API's export, same filters)."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import render

from portal.audit.models import AuditEvent

FILTERS = ("actor", "action", "object_type", "since", "until")


@login_required
def audit_list(request):
    if not request.user.has_perm("audit.view_auditevent"):
        raise PermissionDenied
    p = {k: request.GET.get(k, "").strip() for k in FILTERS}
    qs = AuditEvent.objects.all()
    if p["actor"]:
        qs = qs.filter(actor_name=p["actor"])
    if p["action"]:
        qs = qs.filter(action__startswith=p["action"])
    if p["object_type"]:
        qs = qs.filter(object_type=p["object_type"])
    if p["since"]:
        qs = qs.filter(at__date__gte=p["since"])
    if p["until"]:
        qs = qs.filter(at__date__lte=p["until"])
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    active = {k: v for k, v in p.items() if v}
    return render(request, "audit/audit_list.html", {
        "page": page, "filters": p, "query": urlencode(active),
        "actions": AuditEvent.objects.order_by().values_list("action", flat=True).distinct(),
        "object_types": AuditEvent.objects.order_by().exclude(object_type="").values_list(
            "object_type", flat=True).distinct(),
    })
