"""Study, run and model pages: server-rendered; every action calls the service the API calls."""
from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.datasets.models import Dataset
from portal.datasets.selectors import datasets_visible_to
from portal.experiments.selectors import grid_section
from portal.studies.lifecycle import missed_phases, queue_position
from portal.studies import capsule, registry, services
from portal.studies.forms import ApprovalForm, StartRunForm, StudyForm, dataset_groups, endpoints_by_use_case
from portal.studies.models import Study
from portal.studies.selectors import (
    COMPARISON_SETTINGS, comparison_chart, final_metrics, run_chart_data, runs_visible_to, studies_visible_to, study_comparison,
)
from portal.studies.selectors import models_visible_to
from portal.studies.config import privacy_rows


def _need(request, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


def _selectable_datasets(user):
    return datasets_visible_to(user).filter(node__status="approved")


@login_required
def study_list(request):
    _need(request, "studies.view_study")
    studies = studies_visible_to(request.user).prefetch_related("runs")
    return render(request, "studies/study_list.html", {"studies": studies})


def _form_page(request, form, study=None, mode="create"):
    datasets = list(form.fields["datasets"].queryset)
    meta = {str(d.pk): {"use_case": d.use_case, "groups": dataset_groups(d)} for d in datasets}
    return render(request, "studies/study_form.html", {"form": form, "study": study, "mode": mode,
                                                        "dataset_meta": meta,
                                                        "endpoints": endpoints_by_use_case()})


def _save(request, form, study=None):
    status = Study.Status.READY if request.POST.get("intent") == "ready" else Study.Status.DRAFT
    try:
        data = form.service_data(status)
        if study is None:
            study = services.create_study(request.user, data)
        else:
            study = services.update_study(request.user, study, data)
    except ValidationError as exc:
        form.add_service_errors(exc)
        return None
    messages.success(request, f"Study “{study.title}” saved as {study.get_status_display().lower()}.")
    return study


@login_required
def study_create(request, clone_of: int | None = None):
    _need(request, "studies.add_study")
    qs = _selectable_datasets(request.user)
    source = None
    if clone_of is not None:
        source = get_object_or_404(studies_visible_to(request.user), pk=clone_of)
    if request.method == "POST":
        form = StudyForm(request.POST, datasets_qs=qs)
        if form.is_valid():
            study = _save(request, form)
            if study is not None:
                return redirect("page-study-detail", pk=study.pk)
    else:
        initial = StudyForm.initial_from(source) if source else {}
        if source:
            initial["title"] = f"Copy of {source.title}"[:200]
        form = StudyForm(initial=initial, datasets_qs=qs)
    return _form_page(request, form, source, "clone" if source else "create")


@login_required
def study_clone(request, pk: int):
    return study_create(request, clone_of=pk)


@login_required
def study_edit(request, pk: int):
    _need(request, "studies.change_study")
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    qs = _selectable_datasets(request.user) | Dataset.objects.filter(pk__in=study.datasets.all())
    if request.method == "POST":
        form = StudyForm(request.POST, datasets_qs=qs.distinct())
        if form.is_valid() and _save(request, form, study) is not None:
            return redirect("page-study-detail", pk=study.pk)
    else:
        form = StudyForm(initial=StudyForm.initial_from(study), datasets_qs=qs.distinct())
    return _form_page(request, form, study, "edit")


@login_required
def study_detail(request, pk: int):
    _need(request, "studies.view_study")
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    runs = list(runs_visible_to(request.user).filter(study=study))
    org = getattr(request.user, "organisation_id", None)
    can_decide = request.user.has_perm("studies.approve_study")
    rows = [{**row, "can_decide": can_decide and row["dataset"].node.organisation_id == org}
            for row in services.approval_state(study)]
    return render(request, "studies/study_detail.html", {
        "study": study, "runs": [(r, final_metrics(r)) for r in runs], "dataset_rows": rows,
        "stale": [row["dataset"].node.organisation.name for row in rows if row["stale"]],
        "hp_rows": hp_rows(study.hyperparameters), "privacy_rows": privacy_rows(study.privacy),
        "start_form": StartRunForm(initial={"rounds": study.rounds}),
        "can_run": request.user.has_perm("studies.add_run"),
        "can_edit": request.user.has_perm("studies.change_study"),
        "can_clone": request.user.has_perm("studies.add_study"),
    })


@login_required
@require_POST
def study_start(request, pk: int):
    _need(request, "studies.add_run")
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    form = StartRunForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Rounds: " + " ".join(form.errors.get("rounds", ["invalid"])))
        return redirect("page-study-detail", pk=pk)
    try:
        run = services.start_run(request.user, study, form.cleaned_data["rounds"],
                                 comparison=form.cleaned_data["comparison"])
    except services.RunRefused as exc:
        messages.error(request, f"The run was not started: {exc}.")
        return redirect("page-study-detail", pk=pk)
    messages.success(request, f"Run {run.pk} queued with {run.rounds} rounds.")
    return redirect("page-run-detail", pk=run.pk)


@login_required
@require_POST
def study_decide(request, pk: int):
    _need(request, "studies.approve_study")
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    form = ApprovalForm(request.POST)
    if form.is_valid():
        dataset = get_object_or_404(Dataset, pk=form.cleaned_data["dataset"])
        try:
            services.decide_approval(request.user, study, dataset, form.cleaned_data["decision"],
                                     form.cleaned_data["comment"])
        except services.RunRefused as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{dataset}: {form.cleaned_data['decision']}.")
    else:
        messages.error(request, "The decision was not understood; choose approve or reject.")
    return redirect("page-study-detail", pk=pk)


def hp_rows(hyperparameters: dict) -> list[tuple[str, str]]:
    """Model settings in words, for the pages (never raw JSON)."""
    labels = {"hidden": "hidden units", "lr": "learning rate", "local_epochs": "local epochs per round",
              "batch_size": "batch size (patients)", "weight_decay": "weight decay", "latent_dim": "latent dimensions"}
    out = []
    for key, value in (hyperparameters or {}).items():
        if isinstance(value, list):
            value = " × ".join(map(str, value))
        out.append((labels.get(key, key.replace("_", " ")), str(value)))
    return out


def _comparison_context(request, study):
    runs = list(runs_visible_to(request.user).filter(study=study).select_related("model_version"))
    comparison = study_comparison(study, runs)
    for row in comparison:
        row["cells"] = [row["values"][key] for key, _ in COMPARISON_SETTINGS]
    return {"study": study, "runs": runs, "comparison": comparison, "hp_rows": hp_rows(study.hyperparameters),
            "privacy_rows": privacy_rows(study.privacy), "settings_labels": COMPARISON_SETTINGS}


@login_required
def study_compare(request, pk: int):
    _need(request, "studies.view_run")
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    ctx = _comparison_context(request, study)
    ctx["chart"] = comparison_chart(ctx["comparison"][0]) if ctx["comparison"] else None
    ctx["grid"] = grid_section(request.user, study)
    return render(request, "studies/study_compare.html", ctx)


@login_required
def study_report(request, pk: int):
    """A printable HTML report: settings, data fingerprints, runs, figures (inline SVG-free:
    plotly from the portal's own static files)."""
    _need(request, "studies.view_run")
    study = get_object_or_404(studies_visible_to(request.user), pk=pk)
    ctx = _comparison_context(request, study)
    ctx["charts"] = [run_chart_data(r) for r in ctx["runs"] if r.metrics.exists()]
    ctx["run_rows"] = [(r, final_metrics(r)) for r in ctx["runs"]]
    ctx["grid"] = grid_section(request.user, study)
    download = bool(request.GET.get("download"))
    if download:
        # The downloaded file must stand alone (figures included): inline the CSS and plotly.js.
        from django.contrib.staticfiles import finders

        ctx["inline_css"] = Path(finders.find("css/fedhaem.css")).read_text()
        ctx["inline_js"] = Path(finders.find("vendor/plotly/plotly.min.js")).read_text()
    response = render(request, "studies/study_report.html", ctx)
    if download:
        response["Content-Disposition"] = f'attachment; filename="fedhaem-study-{study.pk}-report.html"'
    return response


@login_required
def run_list(request):
    _need(request, "studies.view_run")
    runs = runs_visible_to(request.user)
    status = request.GET.get("status", "")
    if status:
        runs = runs.filter(status=status)
    return render(request, "studies/run_list.html", {
        "runs": [(r, final_metrics(r)) for r in runs[:200]], "status": status})


@login_required
def run_detail(request, pk: int):
    _need(request, "studies.view_run")
    run = get_object_or_404(runs_visible_to(request.user), pk=pk)
    if run.kind == "synthesis":  # generation runs have their own live page (portal.synthesis)
        return redirect("page-generation-run", pk=pk)
    if run.kind == "analysis":  # so do analysis runs (portal.analyses)
        return redirect("page-analysis-run", pk=pk)
    return render(request, "studies/run_detail.html", {
        "run": run, "chart": run_chart_data(run), "final": final_metrics(run),
        "can_cancel": request.user.has_perm("studies.cancel_run") and run.active and run.status != "concluding",
        "queued_behind": queue_position(run), "missed": missed_phases(run),
    })


@login_required
@require_POST
def run_cancel(request, pk: int):
    """No-JavaScript fallback of the cancel button (the page itself posts to the API)."""
    _need(request, "studies.cancel_run")
    run = get_object_or_404(runs_visible_to(request.user), pk=pk)
    try:
        services.cancel_run(request.user, run)
    except services.RunRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Run {run.pk} cancelled.")
    return redirect("page-run-detail", pk=pk)


def _models_visible_to(user):
    if not user.has_perm("studies.view_modelversion"):
        raise PermissionDenied
    return models_visible_to(user)


@login_required
def model_list(request):
    models = _models_visible_to(request.user).order_by("registered_model_name", "-created_at").prefetch_related("aliases")
    return render(request, "studies/model_list.html", {"models": models})


@login_required
def model_detail(request, pk: int):
    mv = get_object_or_404(_models_visible_to(request.user), pk=pk)
    lineage = mv.lineage or {}
    return render(request, "studies/model_detail.html", {
        "mv": mv, "run": mv.run, "final": final_metrics(mv.run),
        "hp_rows": hp_rows(mv.run.config.get("hyperparameters")),
        "metric_rows": [(k.replace("_", " "), v) for k, v in sorted((mv.metrics or {}).items())
                        if isinstance(v, (int, float))],
        "can_download": _model_files(mv) is not None,
        "aliases": registry.aliases_of(mv),
        "model_aliases": sorted(registry.registered_model_aliases(mv.registered_model_name).items()),
        "tags": sorted((mv.tags or {}).items()),
        "history": registry.history(mv),
        "lineage": lineage, "code": lineage.get("code") or {}, "seeds": lineage.get("seeds") or {},
        "lineage_datasets": lineage.get("datasets") or mv.run.config.get("datasets") or [],
        "packages": sorted((lineage.get("packages") or {}).items()),
        "can_manage": request.user.has_perm("studies.change_modelversion"),
        "has_capsule": mv.run.status == "finished" and mv.run.kind == "survival"})


def _model_files(mv):
    return services.model_files(mv)


@login_required
def model_download(request, pk: int):
    mv = get_object_or_404(_models_visible_to(request.user), pk=pk)
    archive = registry.archive(request.user, mv)
    if archive is None:
        messages.error(request, "The model's files are not stored on this portal (see MLflow).")
        return redirect("page-model-detail", pk=pk)
    filename, content = archive
    response = HttpResponse(content, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
def model_capsule(request, pk: int):
    mv = get_object_or_404(_models_visible_to(request.user), pk=pk)
    try:
        filename, text = capsule.download(request.user, mv)
    except capsule.CapsuleError as exc:
        messages.error(request, f"No reproducibility capsule: {exc}.")
        return redirect("page-model-detail", pk=pk)
    response = HttpResponse(text, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _lifecycle_post(request, pk: int, change) -> HttpResponse:
    """A coordinator's alias or tag change from the model page; a refusal is shown, not raised."""
    _need(request, "studies.change_modelversion")
    mv = get_object_or_404(_models_visible_to(request.user), pk=pk)
    try:
        done = change(mv, request.POST)
    except registry.LifecycleRefused as exc:
        messages.error(request, f"{exc.field + ': ' if exc.field else ''}{exc}")
    else:
        messages.success(request, done)
    return redirect("page-model-detail", pk=pk)


@login_required
@require_POST
def model_alias(request, pk: int):
    def change(mv, form):
        alias, reason = form.get("alias", "").strip(), form.get("reason", "")
        if form.get("remove"):
            registry.remove_alias(request.user, mv, alias, reason)
            return f"Alias {alias} removed from version {mv.version}."
        _, moved = registry.move_alias(request.user, mv, alias, reason)
        return f"Alias {alias} now points to version {mv.version}." if moved else \
            f"Version {mv.version} already holds {alias}."
    return _lifecycle_post(request, pk, change)


@login_required
@require_POST
def model_tag(request, pk: int):
    def change(mv, form):
        key, value = form.get("key", "").strip(), form.get("value", "")
        registry.set_tag(request.user, mv, key, value, form.get("reason", ""))
        return f"Tag {key} {'removed' if value == '' else 'set'}."
    return _lifecycle_post(request, pk, change)
