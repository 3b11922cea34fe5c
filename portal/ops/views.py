from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts import roles as R
from portal.accounts.roles import user_roles
from portal.ops import health
from portal.ops.selectors import approvals_awaited_by, dashboard_for, studies_waiting_for_approval


class HealthView(APIView):
    """Overall status (200 ok / 503 degraded) for anyone; administrators and staff signed in
    (session or token) also see the database, Redis, the SuperLink and the worker nodes."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        user = request.user
        staff = user.is_authenticated and (user.is_staff or user.has_perm("nodes.approve_workernode"))
        report = health.report() if staff else health.status_only()
        return Response(report, status=200 if report["status"] == "ok" else 503)


def home(request):
    if not request.user.is_authenticated:
        return render(request, "ops/welcome.html")
    roles = user_roles(request.user)
    if not roles:
        return render(request, "ops/no_access.html", status=403)
    dashboard = dashboard_for(request.user, roles)
    if R.NODE_OPERATOR in roles:
        dashboard["approvals_awaited"] = approvals_awaited_by(request.user)
    if R.COORDINATOR in roles:
        dashboard["my_studies_waiting"] = studies_waiting_for_approval(request.user)
    return render(request, "ops/home.html", {"dashboard": dashboard, "roles": roles})


@login_required
def no_access(request):
    return render(request, "ops/no_access.html", status=403)
