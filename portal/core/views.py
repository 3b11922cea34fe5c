from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts.roles import user_roles
from portal.core import health


class HealthView(APIView):
    """State of the database, Redis, the SuperLink and the worker nodes."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        report = health.report()
        return Response(report, status=200 if report["status"] == "ok" else 503)


def home(request):
    if not request.user.is_authenticated:
        return render(request, "core/welcome.html")
    roles = user_roles(request.user)
    if not roles:
        return render(request, "core/no_access.html", status=403)
    from portal.core.selectors import dashboard_for

    return render(request, "core/home.html", {"dashboard": dashboard_for(request.user, roles)})


@login_required
def no_access(request):
    return render(request, "core/no_access.html", status=403)
