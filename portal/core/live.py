"""The one publisher of live progress: tasks and the metrics bridge call it; consumers forward."""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def run_group(run_id: int) -> str:
    return f"run-{run_id}"


def publish_run(run_id: int, event: str, payload: dict) -> None:
    """Send `payload` to every browser watching run `run_id`. Never raises: live updates are a
    convenience, the database keeps the record."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(run_group(run_id), {"type": "run.event", "event": event, "data": payload})
    except Exception as exc:  # Redis down must not fail a training round
        log.warning("live update for run %s not sent: %s", run_id, exc)
