"""Celery task of experiment grids: thin; the work is portal.experiments.services.execute_grid."""
from __future__ import annotations

from celery import shared_task

from portal.experiments import services
from portal.experiments.services import GRID_TIME_LIMIT_S


@shared_task(bind=True, acks_late=True, max_retries=0, soft_time_limit=GRID_TIME_LIMIT_S,
             time_limit=GRID_TIME_LIMIT_S + 120)
def execute_grid(self, grid_id: int) -> str:
    """Run grid `grid_id` (CPU-bound: one torch thread, so that it shares the worker's cores)."""
    import torch

    torch.set_num_threads(1)
    return services.execute_grid(grid_id, task_id=self.request.id or "")


@shared_task(acks_late=False, max_retries=0, soft_time_limit=60)
def reconcile_grids() -> dict:
    """Celery beat: re-queue lost grid tasks, fail grids whose worker vanished."""
    return services.reconcile_grids()
