"""Every change to a user, a group or a permission writes an audit event, whoever makes it (the
admin site, the OIDC login, a service, a shell): model signals on User, Group, Permission and the
many-to-many tables user.groups, user.user_permissions and group.permissions."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from portal.audit.context import current_actor
from portal.audit.services import record

# Fields whose change is worth an event; last_login alone changes at every sign-in.
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser",
               "organisation_id", "is_service_account", "password")


def _record(action, obj, detail):
    record(current_actor(), action, obj, detail)


def _user_before(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        instance._audit_before = None
        return
    instance._audit_before = sender.objects.filter(pk=instance.pk).values(*USER_FIELDS).first()


def _user_saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    now = {f: getattr(instance, f) for f in USER_FIELDS}
    before = getattr(instance, "_audit_before", None)
    if created or before is None:
        changes = {f: v for f, v in now.items() if f != "password"}
        _record("user.create", instance, {"fields": changes})
        return
    changed = {f: {"from": before[f], "to": now[f]} for f in USER_FIELDS if before[f] != now[f]}
    if "password" in changed:
        changed["password"] = "changed"  # never the hash
    if changed:
        _record("user.change", instance, {"changes": changed})


def _deleted(action):
    def handler(sender, instance, **kwargs):
        _record(action, instance, {"pk": instance.pk})
    return handler


def _saved(kind):
    def handler(sender, instance, created, raw=False, **kwargs):
        if not raw:
            _record(f"{kind}.{'create' if created else 'change'}", instance, {"name": str(instance)})
    return handler


def _names(model, pks):
    if model is Permission:
        return sorted(f"{a}.{c}" for a, c in model.objects.filter(pk__in=pks).values_list(
            "content_type__app_label", "codename"))
    if model is Group:
        return sorted(model.objects.filter(pk__in=pks).values_list("name", flat=True))
    return sorted(model.objects.filter(pk__in=pks).values_list("username", flat=True))


def _m2m(action_name, field):
    """One handler for a many-to-many table; `field` names the relation on its forward side."""
    def handler(sender, instance, action, reverse, model, pk_set, **kwargs):
        if action == "pre_clear":
            # post_clear has no pk_set: remember what is about to go.
            accessor = _reverse_accessor(field) if reverse else field
            instance._audit_cleared = set(getattr(instance, accessor).values_list("pk", flat=True))
            return
        if action not in ("post_add", "post_remove", "post_clear"):
            return
        pks = pk_set if action != "post_clear" else getattr(instance, "_audit_cleared", set())
        if not pks:
            return
        op = {"post_add": "add", "post_remove": "remove", "post_clear": "remove"}[action]
        _record(action_name, instance, {"op": op, "relation": field, "reverse": reverse,
                                        "members": _names(model, pks)})
    return handler


def _reverse_accessor(field):
    """The accessor from the relation's target back to its source (Group.user_set...)."""
    return "group_set" if field == "permissions" else "user_set"


def connect() -> None:
    User = get_user_model()
    pre_save.connect(_user_before, sender=User, dispatch_uid="audit-user-pre")
    post_save.connect(_user_saved, sender=User, dispatch_uid="audit-user-post")
    post_delete.connect(_deleted("user.delete"), sender=User, dispatch_uid="audit-user-del", weak=False)
    for model, kind in ((Group, "group"), (Permission, "permission")):
        post_save.connect(_saved(kind), sender=model, dispatch_uid=f"audit-{kind}-post", weak=False)
        post_delete.connect(_deleted(f"{kind}.delete"), sender=model, dispatch_uid=f"audit-{kind}-del",
                            weak=False)
    m2m_changed.connect(_m2m("user.groups_change", "groups"), sender=User.groups.through,
                        dispatch_uid="audit-user-groups", weak=False)
    m2m_changed.connect(_m2m("user.permissions_change", "user_permissions"),
                        sender=User.user_permissions.through, dispatch_uid="audit-user-perms", weak=False)
    m2m_changed.connect(_m2m("group.permissions_change", "permissions"), sender=Group.permissions.through,
                        dispatch_uid="audit-group-perms", weak=False)
