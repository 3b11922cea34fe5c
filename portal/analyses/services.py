"""Writes of analysis runs: start (coordinators), the run contract and the conclusion hook.

An analysis run is a studies.Run with kind "analysis": it goes through the one run lifecycle
(portal.studies.lifecycle: same Celery task, SuperLink, events endpoint and websocket as a
survival run). Each hospital returns only aggregates (counts on the study's time grid, sums,
binned counts, Cox gradients and Hessians); the ServerApp writes analysis.json, which the
conclusion validates (portal.analyses.report) and stores as an AnalysisReport."""
from __future__ import annotations

import json

from django.db import transaction

from fl_engine.federation.config import build_contract
from fl_engine.analytics.settings import validate_analysis
from portal.analyses.models import AnalysisReport
from portal.analyses.report import ReportRefused, parse_report
from portal.audit.services import record
from portal.core.live import publish_run
from portal.studies import lifecycle
from portal.studies import services as study_services
from portal.studies.config import flower_privacy
from portal.studies.models import Run, Study
from portal.studies.selectors import dataset_compatibility_errors

START_PERM = "studies.add_run"  # who starts a survival run starts an analysis (coordinators)
REPORT_FILE = "analysis.json"


class AnalysisRefused(Exception):
    """An analysis run cannot start; `field` names the bad input when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def validate_settings(use_case: str, endpoint: str, settings: dict | None) -> dict:
    """The study's analysis settings checked and completed by the engine's validator
    (fl_engine.analytics.settings); ValueError naming each bad field."""
    return validate_analysis(use_case, endpoint, settings)


def can_start_analysis(user) -> bool:
    return user.has_perm(START_PERM)


def start_analysis_run(actor, study: Study) -> Run:
    """Queue an analysis run of `study` with its analysis settings over its approved datasets
    (the same approval, participation and dataset checks as a survival run); the lifecycle
    submits it after commit. Raises AnalysisRefused; nothing is stored then."""
    if not can_start_analysis(actor):
        raise AnalysisRefused("your role does not allow starting an analysis run (study coordinators only)")
    if not study.analysis:
        raise AnalysisRefused("the study has no analysis settings: edit the study and fill in its Analysis section",
                              "analysis")
    try:
        analysis = validate_settings(study.use_case, study.endpoint, study.analysis)
    except ValueError as exc:
        raise AnalysisRefused(f"the study's analysis settings are not valid: {exc}", "analysis") from None
    datasets = list(study.datasets.select_related("node"))
    if not datasets:
        raise AnalysisRefused("the study has no participating dataset")
    # the study's privacy settings and this run's purpose: every policy reason the nodes would give
    # (purpose not allowed, minimum cell count, expiry) refuses the run here, with the remedy
    problems = dataset_compatibility_errors(datasets, study.use_case, study.endpoint, [], [],
                                            privacy=flower_privacy(study.privacy), purpose="analysis")
    if problems:
        raise AnalysisRefused("; ".join(problems))
    names = {d.name for d in datasets}
    if len(names) != 1:
        raise AnalysisRefused("every node must hold the study's dataset under one name; got " + ", ".join(sorted(names)))
    if len(datasets) < study.min_nodes:
        raise AnalysisRefused(f"{len(datasets)} dataset(s) selected, fewer than the minimum of {study.min_nodes} nodes")
    try:
        study_services.check_startable(study, datasets, "analysis")
        participants = study_services.run_participants(datasets)
    except study_services.RunRefused as exc:
        raise AnalysisRefused(str(exc)) from None
    with transaction.atomic():
        run = Run.objects.create(
            study=study, kind=Run.Kind.ANALYSIS, rounds=1, created_by=actor,
            config={
                # the keys of a survival run's snapshot (run_contract_sections reads them) + analysis
                "use_case": study.use_case, "endpoint": study.endpoint, "model": study.model_kind,
                "hyperparameters": study.hyperparameters, "features": study.features,
                "feature_groups": study.feature_groups, "rounds": 1, "fraction_nodes": 1.0,
                "min_nodes": study.min_nodes, "strategy": study.strategy, "privacy": study.privacy,
                "datasets": [{"node": d.node.name, "name": d.name, "version": d.version,
                              "fingerprint": d.fingerprint, "patients": d.patient_count} for d in datasets],
                "participants": participants, "study_settings": study_services.study_settings(study),
                "analysis": analysis,
            })
        record(actor, "run.start_analysis", run, {"analyses": analysis.get("analyses"),
                                                  "group_by": analysis.get("group_by"),
                                                  "nodes": [p["node"] for p in participants]})
        lifecycle.dispatch(run.pk)
    publish_run(run.pk, "status", {"status": run.status})
    return run


def flower_analysis_config(run: Run) -> dict:
    """The nested run contract of analysis run `run`: a survival run's sections (dataset,
    timeouts, events endpoint, node privacy options, approved settings) with task "analysis" and
    the validated analysis settings (pinned in Run.config when it was started)."""
    sections = study_services.run_contract_sections(run)
    sections["federation"].update(num_rounds=1, fraction_train=1.0, fuse_evaluation=False)
    sections["synthesis"] = {"task": "analysis"}
    analysis = validate_settings(run.config["use_case"], run.config["endpoint"], run.config.get("analysis"))
    sections["analysis"] = {"comparison": False, "analysis": json.dumps(analysis, sort_keys=True)}
    return build_contract(**sections)


def conclude_analysis(run: Run, files: dict[str, bytes]) -> str:
    """The conclusion hook of analysis runs: "" once analysis.json is validated and stored as
    the run's AnalysisReport, else the reason (the run then fails with it). Safe to repeat."""
    try:
        store_report(run, files)
    except ReportRefused as exc:
        return str(exc)
    return ""


def store_report(run: Run, files: dict[str, bytes]) -> AnalysisReport:
    existing = AnalysisReport.objects.filter(run=run).first()
    if existing is not None:  # a redelivered conclusion (the files may be gone from the event by now)
        return existing
    if REPORT_FILE not in files:
        raise ReportRefused(f"run {run.pk} ended without its result ({REPORT_FILE} missing from its files: "
                            f"{', '.join(sorted(files)) or 'none'})")
    content = parse_report(files[REPORT_FILE], f"{REPORT_FILE} of run {run.pk}")
    expected = run.config.get("use_case")
    if expected and str(content["use_case"]).upper() != str(expected).upper():
        raise ReportRefused(f"{REPORT_FILE} of run {run.pk}: use_case {content['use_case']!r} is not the run's {expected!r}")
    with transaction.atomic():
        existing = AnalysisReport.objects.filter(run=run).first()
        if existing is not None:  # a redelivered conclusion
            return existing
        report = AnalysisReport.objects.create(run=run, content=content)
        record(None, "analysis.create", report, {"run": run.pk, "hospitals": content.get("hospitals", []),
                                                 "notes": len(content.get("notes") or [])})
    return report
