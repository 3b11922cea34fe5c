"""Analysis pages: start (the study page's "Run analysis"), the live run page with the report's
plots and tables, the CSV downloads. Same roles as survival runs."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.analyses import selectors, services
from portal.analyses.api import csv_response
from portal.studies.lifecycle import missed_phases, queue_position
from portal.studies.selectors import studies_visible_to


@login_required
@require_POST
def analysis_start(request, pk: int):
    if not services.can_start_analysis(request.user):
        raise PermissionDenied
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    try:
        run = services.start_analysis_run(request.user, study)
    except services.AnalysisRefused as exc:
        messages.error(request, f"The analysis was not started: {exc}.")
        return redirect("page-study-detail", pk=pk)
    messages.success(request, f"Analysis run {run.pk} queued.")
    return redirect("page-analysis-run", pk=run.pk)


def _run(request, pk):
    if not request.user.has_perm("studies.view_run"):
        raise PermissionDenied
    return get_object_or_404(selectors.analysis_runs_visible_to(request.user), pk=pk)


@login_required
def analysis_run(request, pk: int):
    """Live page of an analysis run: its phases while it runs, then the report."""
    run = _run(request, pk)
    rep = selectors.report_of(run)
    ctx = {"run": run, "settings": run.config.get("analysis") or {}, "phases": selectors.phase_progress(run),
           "report": rep, "missed": missed_phases(run), "queued_behind": queue_position(run),
           "can_cancel": request.user.has_perm("studies.cancel_run") and run.active and run.status != "concluding",
           "live": {"run": run.pk, "rounds": run.rounds, "done": 0, "status": run.status,
                    "phases": selectors.phase_progress(run)}}
    if rep is not None:
        ctx.update(section_context(rep))
    return render(request, "analyses/analysis_run.html", ctx)


def section_context(rep: dict) -> dict:
    """What templates/analyses/_report.html shows of report `rep`."""
    return {"report": rep, "tables": selectors.summary_tables(rep), "medians": selectors.km_medians(rep),
            "cox_rows": selectors.cox_rows(rep), "suppressed": selectors.suppressed_scopes(rep),
            "notes": selectors.notes_by_section(rep),
            "plots": selectors.plot_data(rep)}


@login_required
def analysis_csv(request, pk: int, table: str):
    run = _run(request, pk)
    resp = csv_response(request.user, run, table)
    if resp is None:
        raise Http404(f"analysis run {run.pk} has no {table} table")
    return resp
