"""Model lifecycle: aliases (candidate, champion, ...) and tags that coordinators set on
registered model versions, each change with a reason, audited, and mirrored in MLflow's model
registry. One version holds an alias at a time per registered model; moving it records the
version it left, the version it reached, who and why (`model.alias` in the audit trail)."""
from __future__ import annotations

import re

from django.db import transaction

from portal.audit.models import AuditEvent
from portal.audit.services import record
from portal.studies import services, tracking
from portal.studies.models import ModelAlias, ModelVersion

ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
TAG_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
SYSTEM_TAG_PREFIX = "fedhaem."  # set by the portal at registration (lineage): not coordinators'
REASON_MAX = 500
TAG_VALUE_MAX = 500
ACTIONS = ("model.alias", "model.alias_removed", "model.tag")


class LifecycleRefused(ValueError):
    """A refused alias or tag change: `field` names the input at fault (None: the model's state),
    `status` the HTTP status the API answers with."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


def check_alias(alias) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise LifecycleRefused("an alias is 1-40 lower-case letters, digits, '-' or '_', starting with a "
                               "letter (for example candidate, champion)", "alias")
    if alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise LifecycleRefused(f"{alias!r} is reserved by MLflow (latest, v<number>)", "alias")
    return alias


def check_reason(reason) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise LifecycleRefused("a reason is required: it is kept in the audit trail", "reason")
    if len(reason) > REASON_MAX:
        raise LifecycleRefused(f"at most {REASON_MAX} characters", "reason")
    return reason.strip()


def check_tag(key, value) -> tuple[str, str]:
    if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
        raise LifecycleRefused("a tag key is 1-64 letters, digits, '.', '-' or '_', starting with a letter", "key")
    if key.lower().startswith(SYSTEM_TAG_PREFIX):
        raise LifecycleRefused(f"keys starting with {SYSTEM_TAG_PREFIX!r} are the portal's own", "key")
    if not isinstance(value, str) or len(value) > TAG_VALUE_MAX:
        raise LifecycleRefused(f"a tag value is text of at most {TAG_VALUE_MAX} characters (\"\" removes the tag)",
                               "value")
    return key, value


def _mirror(fn, *args) -> None:
    """Apply the change in MLflow's registry too; refused (409) when MLflow does not hold the
    version, so the portal never claims an alias MLflow does not have."""
    try:
        fn(*args)
    except tracking.RegistryMissing as exc:
        raise LifecycleRefused(f"MLflow's registry does not hold this model version: {exc}", None, 409) from exc
    except tracking.RegistryInvalid as exc:
        raise LifecycleRefused(f"MLflow's registry refused the change: {exc}", None, 400) from exc


def move_alias(actor, mv: ModelVersion, alias: str, reason: str) -> tuple[ModelAlias, bool]:
    """Point `alias` of `mv`'s registered model at `mv` (taking it from the version that held
    it). Returns (the alias, moved); an alias already on `mv` is left as it is and not audited."""
    alias, reason = check_alias(alias), check_reason(reason)
    with transaction.atomic():
        current = (ModelAlias.objects.select_for_update()
                   .filter(registered_model_name=mv.registered_model_name, alias=alias).first())
        if current is not None and current.model_version_id == mv.pk:
            return current, False
        previous = current.model_version if current is not None else None
        if current is None:
            current = ModelAlias(registered_model_name=mv.registered_model_name, alias=alias)
        current.model_version, current.set_by, current.reason = mv, actor, reason
        current.save()
        record(actor, "model.alias", mv, {
            "registered_model": mv.registered_model_name, "alias": alias, "reason": reason,
            "from_version": previous.version if previous else None, "from_id": previous.pk if previous else None,
            "to_version": mv.version, "to_id": mv.pk})
        _mirror(tracking.set_alias, mv.registered_model_name, alias, mv.version)
    return current, True


def remove_alias(actor, mv: ModelVersion, alias: str, reason: str) -> None:
    """Take `alias` off `mv` (LifecycleRefused naming `alias` when `mv` does not hold it)."""
    alias, reason = check_alias(alias), check_reason(reason)
    with transaction.atomic():
        current = (ModelAlias.objects.select_for_update()
                   .filter(registered_model_name=mv.registered_model_name, alias=alias, model_version=mv).first())
        if current is None:
            raise LifecycleRefused(f"version {mv.version} does not hold the alias {alias!r}", "alias")
        current.delete()
        record(actor, "model.alias_removed", mv, {"registered_model": mv.registered_model_name, "alias": alias,
                                                  "reason": reason, "from_version": mv.version, "from_id": mv.pk,
                                                  "to_version": None, "to_id": None})
        _mirror(tracking.delete_alias, mv.registered_model_name, alias)


def set_tag(actor, mv: ModelVersion, key: str, value: str, reason: str) -> ModelVersion:
    """Set tag `key` of `mv` to `value` ("" removes it), audited as `model.tag` with the old value."""
    key, value = check_tag(key, value)
    reason = check_reason(reason)
    with transaction.atomic():
        mv = ModelVersion.objects.select_for_update().get(pk=mv.pk)
        old = (mv.tags or {}).get(key)
        if value == "" and old is None:
            raise LifecycleRefused(f"version {mv.version} has no tag {key!r} to remove", "key")
        tags = dict(mv.tags or {})
        if value == "":
            tags.pop(key)
        else:
            tags[key] = value
        mv.tags = tags
        mv.save(update_fields=["tags"])
        record(actor, "model.tag", mv, {"registered_model": mv.registered_model_name, "key": key, "from": old,
                                        "to": value or None, "reason": reason})
        if value == "":
            _mirror(tracking.delete_version_tag, mv.registered_model_name, mv.version, key)
        else:
            _mirror(tracking.set_version_tag, mv.registered_model_name, mv.version, key, value)
    return mv


# --- reads ----------------------------------------------------------------------------------

def aliases_of(mv: ModelVersion) -> list[str]:
    return sorted(mv.aliases.values_list("alias", flat=True))


def registered_model_aliases(name: str) -> dict[str, ModelVersion]:
    """{alias: version holding it} of registered model `name`."""
    return {a.alias: a.model_version
            for a in ModelAlias.objects.filter(registered_model_name=name).select_related("model_version")}


def history(mv: ModelVersion, limit: int = 50) -> list[dict]:
    """The registered model's alias moves and `mv`'s tag changes, newest first, from the audit
    trail: {at, who, action, alias/key, from, to, reason}."""
    ids = [str(pk) for pk in ModelVersion.objects.filter(registered_model_name=mv.registered_model_name)
           .values_list("pk", flat=True)]
    events = (AuditEvent.objects.filter(object_type=ModelVersion._meta.label_lower, action__in=ACTIONS)
              .filter(object_id__in=ids).order_by("-at", "-id"))
    out = []
    for e in events[:limit * 2]:
        d = e.detail or {}
        if e.action == "model.tag":
            if e.object_id != str(mv.pk):
                continue
            out.append({"at": e.at, "who": e.actor_name, "action": "tag", "name": d.get("key"),
                        "from": d.get("from"), "to": d.get("to"), "reason": d.get("reason", "")})
        else:
            out.append({"at": e.at, "who": e.actor_name, "action": "alias", "name": d.get("alias"),
                        "from": f"v{d['from_version']}" if d.get("from_version") else None,
                        "to": f"v{d['to_version']}" if d.get("to_version") else None,
                        "reason": d.get("reason", "")})
    return out[:limit]


def archive(actor, mv: ModelVersion) -> tuple[str, bytes] | None:
    """The model files' zip as services.model_archive makes it (audited as `model.download`),
    named after the aliases `mv` holds: fedhaem-mds-os-study3-v2-champion.zip."""
    got = services.model_archive(actor, mv)
    if got is None:
        return None
    name, content = got
    aliases = aliases_of(mv)
    if aliases:
        name = f"{name.removesuffix('.zip')}-{'-'.join(aliases)}.zip"
    return name, content
