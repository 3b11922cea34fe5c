"""Celery tasks of studies: thin. They drive one run through the Flower adapter."""
from __future__ import annotations

import json
import logging
import time

from celery import shared_task
from django.conf import settings

log = logging.getLogger(__name__)

POLL_S = 0.5
STATUS_EVERY_S = 2.0


@shared_task(bind=True, acks_late=True, soft_time_limit=None, max_retries=0)
def execute_run(self, run_id: int) -> str:
    """Submit run `run_id` to the SuperLink, relay its metrics, and record how it ended."""
    from portal.studies import flower_adapter, services
    from portal.studies.models import Run

    run = Run.objects.get(pk=run_id)
    if run.status != Run.Status.QUEUED or run.cancel_requested:
        return run.status
    run = services.set_status(run, Run.Status.STARTING, task_id=self.request.id or "")
    try:
        if run.kind == Run.Kind.SYNTHESIS:  # synthetic-cohort generation (portal.synthesis)
            from portal.synthesis.services import flower_generation_config
            run_config = flower_generation_config(run)
        else:
            run_config = services.flower_run_config(run)
        flower_id = flower_adapter.start_run(run_config)
    except (flower_adapter.FlowerUnavailable, ValueError) as exc:
        services.set_status(run, Run.Status.FAILED, error=f"could not start the run on the SuperLink: {exc}")
        return "failed"
    run = services.set_status(run, Run.Status.RUNNING, flower_run_id=flower_id)
    deadline = time.monotonic() + settings.RUN_TIME_LIMIT_S + 60
    next_status = 0.0
    while True:
        time.sleep(POLL_S)
        services.ingest_metrics_file(run)
        run.refresh_from_db()
        if run.status == Run.Status.CANCELLED:
            return "cancelled"
        if time.monotonic() > deadline:
            _stop_quietly(flower_id)
            services.set_status(run, Run.Status.FAILED,
                                error=f"run exceeded its time limit of {settings.RUN_TIME_LIMIT_S} s and was stopped")
            return "failed"
        if time.monotonic() < next_status:
            continue
        next_status = time.monotonic() + STATUS_EVERY_S
        try:
            state = flower_adapter.run_status(flower_id)
        except flower_adapter.FlowerUnavailable as exc:
            log.warning("run %s: status unavailable: %s", run_id, exc)
            continue
        if state["finished"]:
            services.ingest_metrics_file(run)
            return _conclude(run, state["status"])


def _conclude(run, flower_status: str) -> str:
    from portal.studies import services, tracking
    from portal.studies.models import Run

    d = services.run_dir(run)
    failure = _error_event(d / "metrics.jsonl")
    if flower_status.endswith("completed") and not failure and run.kind == Run.Kind.SYNTHESIS:
        from portal.synthesis import services as synthesis_services
        try:
            synthesis_services.conclude_generation(run)
        except synthesis_services.CohortRefused as exc:
            services.set_status(run, Run.Status.FAILED, error=str(exc))
            return "failed"
        services.set_status(run, Run.Status.FINISHED)
        return "finished"
    if flower_status.endswith("completed") and not failure:
        model_dir = d / "model"
        if not (model_dir / "model.json").exists():
            services.set_status(run, Run.Status.FAILED, error="the run ended without saving a global model")
            return "failed"
        try:
            tracking.log_run(run, model_dir)
        except Exception as exc:  # MLflow down must not lose the run's own record
            log.exception("run %s: MLflow registration failed", run.pk)
            services.set_status(run, Run.Status.FINISHED, error=f"model not registered in MLflow: {exc}")
            return "finished"
        services.set_status(run, Run.Status.FINISHED)
        return "finished"
    if flower_status.endswith("stopped"):
        services.set_status(run, Run.Status.CANCELLED, error="stopped on the SuperLink")
        return "cancelled"
    reason = failure or f"Flower reported {flower_status}"
    from portal.studies import flower_adapter

    tail = flower_adapter.run_logs(run.flower_run_id)[-1500:]
    services.set_status(run, Run.Status.FAILED, error=f"{reason}\n--- ServerApp log (tail) ---\n{tail}")
    return "failed"


def _error_event(path) -> str:
    if not path.exists():
        return ""
    reason = ""
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") == "error":
            reason = str(rec.get("reason", "the federation reported an error"))
    return reason


def _stop_quietly(flower_id: str) -> None:
    from portal.studies import flower_adapter

    try:
        flower_adapter.stop_run(flower_id)
    except flower_adapter.FlowerUnavailable:
        pass
