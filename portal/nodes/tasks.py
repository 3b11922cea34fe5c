"""Celery tasks of nodes: thin; the SuperLink work happens in the Flower adapter."""
from celery import shared_task

from portal.nodes.selectors import nodes_out_of_sync
from portal.studies import flower_adapter


@shared_task(acks_late=True, soft_time_limit=120)
def sync_node_key(node_id: int) -> None:
    """Register (approved) or unregister (revoked) a node's key with the SuperLink."""
    flower_adapter.sync_node_key(node_id)


@shared_task(acks_late=False, soft_time_limit=120)
def reconcile_node_keys() -> int:
    """Celery beat: retry the SuperLink key sync of nodes it left behind (an approved node with
    no Flower node id yet, a revoked node still registered); returns how many were tried."""
    pks = list(nodes_out_of_sync().values_list("pk", flat=True))
    for pk in pks:
        flower_adapter.sync_node_key(pk)
    return len(pks)
