"""Synthetic cohorts: validation report, release status, download (data managers, released only)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.studies.lifecycle import queue_position
from portal.studies.selectors import runs_visible_to, studies_visible_to
from portal.synthesis import services
from portal.synthesis.api import _parquet_response
from portal.synthesis.forms import GenerationForm
from portal.synthesis.selectors import (cohorts_visible_to, data_card, generation_chart_data, last_round_table,
                                        report_plots, report_rows)


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
        "plots": report_plots(cohort),
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




@login_required
def cohort_download_parquet(request, pk: int):
    _need(request)
    cohort = get_object_or_404(cohorts_visible_to(request.user), pk=pk)
    try:
        data = services.download_parquet(request.user, cohort)
    except services.CohortRefused as exc:
        return render(request, "synthesis/refused.html", {"cohort": cohort, "reason": str(exc)}, status=403)
    return _parquet_response(cohort, data)


# --- generation runs ---------------------------------------------------------------------------

@login_required
@require_POST
def generation_start(request, pk: int):
    """The study page's "Generate synthetic cohort" form."""
    if not services.can_start_generation(request.user):
        raise PermissionDenied
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    form = GenerationForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Synthetic cohort not started: " + "; ".join(
            f"{form.fields[k].label or k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("page-study-detail", pk=pk)
    try:
        run = services.start_generation_run(request.user, study, **form.cleaned_data)
    except services.GenerationRefused as exc:
        messages.error(request, f"Synthetic cohort not started: {exc}")
        return redirect("page-study-detail", pk=pk)
    messages.success(request, f"Generation run {run.pk} queued.")
    return redirect("page-generation-run", pk=run.pk)


@login_required
def generation_run(request, pk: int):
    """Live page of a generation run: CSF, GSF, NNDR p5 per round, federated vs each node alone."""
    if not request.user.has_perm("studies.view_run"):
        raise PermissionDenied
    run = get_object_or_404(runs_visible_to(request.user).filter(kind="synthesis"), pk=pk)
    cohort = run.synthetic_cohorts.first()
    return render(request, "synthesis/generation_run.html", {
        "run": run, "chart": generation_chart_data(run), "table": last_round_table(run),
        "generation": run.config.get("generation", {}), "cohort": cohort,
        "can_see_cohort": request.user.has_perm("synthesis.view_syntheticcohort"),
        "can_cancel": request.user.has_perm("studies.cancel_run") and run.active and run.status != "concluding",
        "queued_behind": queue_position(run),
    })
