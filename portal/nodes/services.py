"""Writes on worker nodes: registration, approval, revocation, heartbeats."""
from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from portal.accounts.roles import NODE_AGENT
from portal.audit.services import record
from portal.nodes.models import WorkerNode
from portal.nodes.tasks import sync_node_key


class NodeStateError(Exception):
    """The node is not in a state that allows this action."""


def key_fingerprint(public_key: str) -> str:
    """sha256 hex of a PEM or OpenSSH public key in its OpenSSH form (type and base64 body)."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    raw = public_key.strip().encode()
    if raw.startswith(b"-----"):
        raw = serialization.load_pem_public_key(raw).public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return hashlib.sha256(b" ".join(raw.split()[:2])).hexdigest()


class KeyInUse(NodeStateError):
    """The public key belongs to another worker node already."""


def register_node(actor, organisation, name: str, public_key: str) -> WorkerNode:
    """A pending node of `organisation`; KeyInUse when another node holds the key (a key names
    exactly one node, so nobody registers another hospital's key as their own)."""
    digest = key_fingerprint(public_key)
    if WorkerNode.objects.filter(key_fingerprint=digest).exists():
        record(actor, "node.register_refused", None, {"name": name, "organisation": organisation.code,
                                                        "reason": "public key already registered"})
        raise KeyInUse("this public key is already registered to another worker node; "
                       "generate a key pair for this node (fedhaem-node keygen)")
    node = WorkerNode.objects.create(organisation=organisation, name=name, public_key=public_key.strip(),
                                     key_fingerprint=digest)
    record(actor, "node.register", node, {"organisation": organisation.code, "key": digest[:16]})
    return node


@transaction.atomic
def replace_key(actor, node: WorkerNode, public_key: str) -> WorkerNode:
    """A new key for a pending or revoked node (after revocation Flower keeps the old key
    retired for good); the node is approved again with it."""
    node = WorkerNode.objects.select_for_update().get(pk=node.pk)
    if node.status == WorkerNode.Status.APPROVED:
        raise NodeStateError(f"node {node.name} is approved: revoke it before replacing its key")
    if node.status == WorkerNode.Status.REVOKED and node.flower_node_id:
        raise NodeStateError(f"node {node.name}'s old key is still registered with the SuperLink (its "
                             "unregistration is pending and retried every 30 s); replace the key once it is done")
    digest = key_fingerprint(public_key)
    if WorkerNode.objects.filter(key_fingerprint=digest).exclude(pk=node.pk).exists() or (
            digest == node.key_fingerprint and node.key_retired):
        raise KeyInUse("this public key is registered already or was retired; generate a new key pair")
    node.public_key, node.key_fingerprint, node.key_retired, node.flower_node_id = public_key.strip(), digest, False, ""
    node.save(update_fields=["public_key", "key_fingerprint", "key_retired", "flower_node_id"])
    record(actor, "node.replace_key", node, {"key": digest[:16]})
    return node


@transaction.atomic
def approve_node(actor, node: WorkerNode) -> str:
    """Approve a node; returns its API token (shown once to the administrator)."""
    from django.contrib.auth.models import Group

    node = WorkerNode.objects.select_for_update().get(pk=node.pk)
    if node.status == WorkerNode.Status.APPROVED:
        raise NodeStateError(f"node {node.name} is already approved")
    if node.key_retired:
        raise NodeStateError(f"node {node.name}'s key was unregistered from the SuperLink at revocation and "
                             "Flower never registers a key twice: the node operator must submit a new key "
                             "(fedhaem-node keygen, then replace the key) before approval")
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
    """Record a node's (validated) heartbeat. Its Flower node id comes from the SuperLink at key
    registration, never from here: a heartbeat naming another id is stored as reported but
    changes nothing, and is audited. The ledger summary ("privacy") and the local policy limits
    ("policy_limits") replace the stored ones when the heartbeat carries them; a heartbeat
    without them (an older node) leaves them as they were."""
    payload = dict(payload)
    now = timezone.now()
    changes = {"last_heartbeat": now}
    if "privacy" in payload:
        changes["privacy_spend"] = json.loads(json.dumps(payload.pop("privacy")))
        changes["privacy_reported_at"] = now
    if "policy_limits" in payload:
        limits = payload.pop("policy_limits")
        changes["policy_limits"] = limits
        if limits != node.policy_limits:
            record(node.service_user, "node.policy_limits", node, {"before": node.policy_limits, "after": limits})
    claimed = str(payload.get("flower_node_id") or "")
    if claimed and claimed != node.flower_node_id:
        record(node.service_user, "node.identity_mismatch", node,
               {"reported_flower_node_id": claimed, "registered_flower_node_id": node.flower_node_id})
    changes["last_report"] = payload
    WorkerNode.objects.filter(pk=node.pk).update(**changes)
    node.refresh_from_db(fields=list(changes))
    return node


def issue_token(actor, node: WorkerNode) -> str:
    """A new API token for an approved node (the old one stops working); audited."""
    if node.status != WorkerNode.Status.APPROVED or node.service_user is None:
        raise NodeStateError(f"node {node.name} is not approved")
    Token.objects.filter(user=node.service_user).delete()
    token = Token.objects.create(user=node.service_user)
    record(actor, "node.token_issued", node)
    return token.key


def record_refusal(node: WorkerNode, info: dict) -> None:
    """A node refused a run (its own approval check); audited against the node."""
    record(node.service_user, "node.run_refused", node, {k: str(v)[:2000] for k, v in info.items()})


def _sync_key_later(node_id: int) -> None:
    # The SuperLink may be slow or away: a Celery task owns the call and its retries, so an
    # administrator's click never waits on Flower.
    try:
        sync_node_key.delay(node_id)
    except Exception as exc:  # broker down: the approval stands; the health page shows the node
        import logging

        logging.getLogger(__name__).warning("node %s: key sync not queued: %s", node_id, exc)
