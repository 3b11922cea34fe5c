"""Synthetic cohorts: validation report, release status, download (data managers, released only)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.synthesis import services
from portal.synthesis.selectors import cohorts_visible_to, data_card, report_rows


def _need(request):
    if not request.user.has_perm("synthesis.view_syntheticcohort"):
        raise PermissionDenied


@login_required
def cohort_list(request):
    _need(request)
    return render(request, "synthesis/cohort_list.html", {
        "cohorts": cohorts_visible_to(request.user),
        "can_download": request.user.has_perm("synthesis.download_syntheticcohort")})


@login_required
def cohort_detail(request, pk: int):
    _need(request)
    cohort = get_object_or_404(cohorts_visible_to(request.user), pk=pk)
    return render(request, "synthesis/cohort_detail.html", {
        "cohort": cohort, "card": data_card(cohort), "report": report_rows(cohort),
        "gate_passed": services.gate_passed(cohort),
        "can_download": request.user.has_perm("synthesis.download_syntheticcohort"),
        "can_release": request.user.has_perm("synthesis.add_syntheticcohort")})


@login_required
def cohort_download(request, pk: int):
    _need(request)
    cohort = get_object_or_404(cohorts_visible_to(request.user), pk=pk)
    try:
        handle = services.open_for_download(request.user, cohort)
    except services.CohortRefused as exc:
        return render(request, "synthesis/refused.html", {"cohort": cohort, "reason": str(exc)}, status=403)
    name = cohort.file.name.rsplit("/", 1)[-1] or f"cohort-{cohort.pk}.csv"
    return FileResponse(handle, as_attachment=True, filename=name)


@login_required
@require_POST
def cohort_release(request, pk: int):
    if not request.user.has_perm("synthesis.add_syntheticcohort"):
        raise PermissionDenied
    cohort = get_object_or_404(cohorts_visible_to(request.user), pk=pk)
    try:
        services.release_cohort(request.user, cohort)
    except services.CohortRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{cohort} released: data managers can download it.")
    return redirect("page-cohort-detail", pk=pk)


