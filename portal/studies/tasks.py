"""Celery tasks of the run lifecycle: thin; the work is in portal.studies.lifecycle. Each takes a
run id, is acknowledged late (a killed worker's task is delivered again) and is safe to repeat."""
from __future__ import annotations

from celery import shared_task

from portal.studies import lifecycle


@shared_task(bind=True, acks_late=True, max_retries=0, soft_time_limit=300, time_limit=360)
def submit_run(self, run_id: int) -> str:
    """Claim queued run `run_id` and submit it to the SuperLink (seconds, not the run's life)."""
    return lifecycle.submit(run_id, task_id=self.request.id or "")


@shared_task(acks_late=True, max_retries=0, soft_time_limit=600, time_limit=660)
def conclude_run(run_id: int) -> str:
    """Register the model / store the cohort of concluding run `run_id`, then finish it."""
    return lifecycle.conclude(run_id)


@shared_task(acks_late=False, max_retries=0, soft_time_limit=120, time_limit=150)
def reconcile_runs() -> dict:
    """Celery beat: one pass of the reconciler over every active run."""
    return lifecycle.reconcile()
