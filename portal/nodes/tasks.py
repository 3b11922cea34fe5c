"""Celery tasks of nodes: thin; the SuperLink work happens in the Flower adapter."""
from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=120)
def sync_node_key(node_id: int) -> None:
    """Register (approved) or unregister (revoked) a node's key with the SuperLink."""
    from portal.studies import flower_adapter

    flower_adapter.sync_node_key(node_id)
