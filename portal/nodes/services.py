"""Writes on worker nodes: registration, approval, revocation, heartbeats."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from portal.accounts.roles import NODE_AGENT
from portal.audit.services import record
from portal.nodes.models import WorkerNode


class NodeStateError(Exception):
    """The node is not in a state that allows this action."""


def register_node(actor, organisation, name: str, public_key: str) -> WorkerNode:
    node = WorkerNode.objects.create(organisation=organisation, name=name, public_key=public_key.strip())
    record(actor, "node.register", node, {"organisation": organisation.code})
    return node


@transaction.atomic
def approve_node(actor, node: WorkerNode) -> str:
    """Approve a node; returns its API token (shown once to the administrator)."""
    from django.contrib.auth.models import Group

    node = WorkerNode.objects.select_for_update().get(pk=node.pk)
    if node.status == WorkerNode.Status.APPROVED:
        raise NodeStateError(f"node {node.name} is already approved")
    User = get_user_model()
    if node.service_user is None:
        user = User.objects.create_user(f"node-{node.name}", organisation=node.organisation,
                                        is_service_account=True)
        user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get_or_create(name=NODE_AGENT)[0])
        node.service_user = user
    else:
        node.service_user.is_active = True
        node.service_user.save(update_fields=["is_active"])
    Token.objects.filter(user=node.service_user).delete()
    token = Token.objects.create(user=node.service_user)
    node.status = WorkerNode.Status.APPROVED
    node.approved_at = timezone.now()
    node.approved_by = actor if getattr(actor, "pk", None) else None
    node.save()
    record(actor, "node.approve", node)
    transaction.on_commit(lambda: _sync_key_later(node.pk))
    return token.key


@transaction.atomic
def revoke_node(actor, node: WorkerNode, reason: str = "") -> WorkerNode:
    node = WorkerNode.objects.select_for_update().get(pk=node.pk)
    if node.status == WorkerNode.Status.REVOKED:
        raise NodeStateError(f"node {node.name} is already revoked")
    node.status = WorkerNode.Status.REVOKED
    node.save(update_fields=["status"])
    if node.service_user_id:
        Token.objects.filter(user_id=node.service_user_id).delete()
        type(node.service_user).objects.filter(pk=node.service_user_id).update(is_active=False)
    record(actor, "node.revoke", node, {"reason": reason})
    transaction.on_commit(lambda: _sync_key_later(node.pk))
    return node


def heartbeat(node: WorkerNode, payload: dict) -> WorkerNode:
    node.last_heartbeat = timezone.now()
    node.last_report = payload
    if payload.get("flower_node_id"):
        node.flower_node_id = str(payload["flower_node_id"])
    node.save(update_fields=["last_heartbeat", "last_report", "flower_node_id"])
    return node


def _sync_key_later(node_id: int) -> None:
    # The SuperLink may be slow or away: a Celery task owns the call and its retries, so an
    # administrator's click never waits on Flower.
    from portal.nodes.tasks import sync_node_key

    try:
        sync_node_key.delay(node_id)
    except Exception as exc:  # broker down: the approval stands; the health page shows the node
        import logging

        logging.getLogger(__name__).warning("node %s: key sync not queued: %s", node_id, exc)
