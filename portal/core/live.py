"""The one publisher of live progress: tasks and the metrics bridge call it; consumers forward."""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def run_group(run_id: int) -> str:
    return f"run-{run_id}"


def grid_group(grid_id: int) -> str:
    return f"grid-{grid_id}"


def _publish(group: str, event: str, payload: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:  # "live.event": portal.core.consumers.LiveConsumer.live_event forwards it
        async_to_sync(layer.group_send)(group, {"type": "live.event", "event": event, "data": payload})
    except Exception as exc:  # Redis down must not fail a training round or a grid
        log.warning("live update for %s not sent: %s", group, exc)


def publish_run(run_id: int, event: str, payload: dict) -> None:
    """Send `payload` to every browser watching run `run_id`. Never raises: live updates are a
    convenience, the database keeps the record."""
    _publish(run_group(run_id), event, payload)


def publish_grid(grid_id: int, event: str, payload: dict) -> None:
    """Send `payload` to every browser watching experiment grid `grid_id`; never raises."""
    _publish(grid_group(grid_id), event, payload)
