"""Page actions of the experiment grid (the section itself is rendered on the study's comparison
page from templates/experiments/grid_section.html): start, cancel, results download."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.experiments import services
from portal.experiments.forms import GridStartForm
from portal.experiments.selectors import VIEW_PERM, grids_visible_to
from portal.studies.selectors import studies_visible_to


def _compare_url(study_pk: int) -> str:
    return reverse("page-study-compare", args=[study_pk]) + "#grid"


@login_required
@require_POST
def grid_start(request, pk: int):
    if not services.can_start_grid(request.user):
        raise PermissionDenied
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    form = GridStartForm(request.POST, study=study)
    if not form.is_valid():
        messages.error(request, "Experiment grid not started: " + "; ".join(
            f"{form.fields[k].label or k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect(_compare_url(pk))
    try:
        grid = services.start_grid(request.user, study, **form.service_options())
    except services.GridRefused as exc:
        messages.error(request, f"Experiment grid not started: {exc}")
        return redirect(_compare_url(pk))
    messages.success(request, f"Experiment grid {grid.pk} queued.")
    return redirect(_compare_url(pk))


@login_required
@require_POST
def grid_cancel(request, pk: int):
    if not services.can_cancel_grid(request.user):
        raise PermissionDenied
    grid = get_object_or_404(grids_visible_to(request.user), pk=pk)
    try:
        services.cancel_grid(request.user, grid)
    except services.GridRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Experiment grid {grid.pk}: cancellation requested.")
    return redirect(_compare_url(grid.study_id))


@login_required
def grid_results_csv(request, pk: int):
    if not request.user.has_perm(VIEW_PERM):
        raise PermissionDenied
    grid = get_object_or_404(grids_visible_to(request.user).filter(status="finished"), pk=pk)
    response = HttpResponse(services.results_csv(grid), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="fedhaem-grid-{grid.pk}-results.csv"'
    return response
