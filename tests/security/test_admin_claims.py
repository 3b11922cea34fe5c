"""An administrator cannot grant themselves what the identity provider did not: the admin site
cannot edit roles, organisation, permissions or superuser status, the next sign-in resets them
from the claims, and every change to a user, a group or a permission is audited."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, Permission

from portal.accounts.oidc import FedHaemOIDCBackend
from portal.audit.models import AuditEvent


@pytest.fixture
def staff_admin(personas):
    user = personas["administrator"]
    user.is_staff = True  # what the OIDC login gives the administrator role
    user.save()
    return user


def _form_data(user, **extra):
    data = {"username": user.username, "email": user.email, "first_name": "", "last_name": "",
            "is_active": "on", "timezone": "UTC"}
    data.update(extra)
    return data


@pytest.mark.parametrize("who", ["administrator", "superuser"])
def test_admin_user_form_cannot_grant_roles_organisation_or_superuser(client, personas, orgs, staff_admin, who):
    actor = staff_admin
    if who == "superuser":
        from django.contrib.auth import get_user_model

        actor = get_user_model().objects.create_user("root", is_staff=True, is_superuser=True,
                                                     organisation=orgs["hosp-a"])
    client.force_login(actor)
    url = f"/admin/accounts/user/{staff_admin.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("is_superuser", "is_staff", "groups", "user_permissions", "organisation", "username"):
        assert not re.search(rf'name="{field}"', html), field
    coordinator = Group.objects.get(name="coordinator")
    perm = Permission.objects.get(codename="download_syntheticcohort")
    r = client.post(url, _form_data(staff_admin, username="clinician2", email="ada@hosp-a.example.org", is_superuser="on",
                                    groups=[coordinator.pk], user_permissions=[perm.pk],
                                    organisation=orgs["hosp-z"].pk))
    assert r.status_code == 302, r.content.decode()[:2000]
    staff_admin.refresh_from_db()
    assert staff_admin.email == "ada@hosp-a.example.org"  # ordinary fields still edit
    assert staff_admin.username == "administrator"
    assert not staff_admin.is_superuser
    assert staff_admin.organisation == orgs["hosp-a"]
    assert list(staff_admin.groups.values_list("name", flat=True)) == ["administrator"]
    assert not staff_admin.user_permissions.exists()
    change = AuditEvent.objects.filter(action="user.change", object_id=str(staff_admin.pk)).first()
    assert change is not None and change.actor_name == actor.username
    assert change.detail["changes"]["email"]["to"] == "ada@hosp-a.example.org"


def test_group_admin_is_read_only_even_for_a_superuser(client, personas, orgs):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    group = Group.objects.get(name="administrator")
    perm = Permission.objects.get(codename="download_syntheticcohort")
    before = set(group.permissions.values_list("pk", flat=True))
    r = client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "administrator",
                                                               "permissions": list(before | {perm.pk})})
    assert r.status_code == 403
    assert set(group.permissions.values_list("pk", flat=True)) == before
    assert client.post("/admin/auth/group/add/", {"name": "x"}).status_code == 403


def _claims(username, roles, org="hosp-a"):
    return {"preferred_username": username, "email": f"{username}@x.org", "roles": roles, "organisation": org}


def test_sign_in_resets_superuser_roles_organisation_and_permissions(personas, orgs):
    user = personas["administrator"]
    user.is_superuser = True
    user.organisation = orgs["hosp-z"]
    user.save()
    user.groups.add(Group.objects.get(name="node_agent"), Group.objects.get(name="coordinator"))
    user.user_permissions.add(Permission.objects.get(codename="download_syntheticcohort"))
    FedHaemOIDCBackend().update_user(user, _claims(user.username, ["administrator"]))
    user.refresh_from_db()
    assert not user.is_superuser and user.is_staff
    assert user.organisation == orgs["hosp-a"]
    assert list(user.groups.values_list("name", flat=True)) == ["administrator"]
    assert not user.user_permissions.exists()
    login = AuditEvent.objects.filter(action="login").first()
    assert login.detail == {"roles": ["administrator"], "superuser": False, "organisation": "hosp-a"}
    reset = AuditEvent.objects.filter(action="user.change", object_id=str(user.pk)).first()
    assert reset.detail["changes"]["is_superuser"] == {"from": True, "to": False}


def test_superuser_only_from_the_superuser_role_claim(personas, settings):
    user = personas["administrator"]
    FedHaemOIDCBackend().update_user(user, _claims(user.username, ["administrator", "superuser"]))
    user.refresh_from_db()
    assert user.is_superuser and user.is_staff
    assert "superuser" not in user.roles
    settings.OIDC_SUPERUSER_ROLE = ""  # a deployment may switch the claim off
    FedHaemOIDCBackend().update_user(user, _claims(user.username, ["administrator", "superuser"]))
    user.refresh_from_db()
    assert not user.is_superuser


def test_missing_organisation_claim_leaves_no_organisation(personas):
    user = personas["clinician"]
    FedHaemOIDCBackend().update_user(user, _claims(user.username, ["clinician"], org=""))
    user.refresh_from_db()
    assert user.organisation is None


def test_every_change_to_users_groups_and_permissions_is_audited(personas):
    from django.contrib.auth import get_user_model

    user = personas["clinician"]
    perm = Permission.objects.get(codename="download_syntheticcohort")
    start = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    user.user_permissions.add(perm)
    user.groups.add(Group.objects.get(name="coordinator"))
    user.groups.clear()
    group = Group.objects.create(name="shadow-admins")
    group.permissions.add(perm)
    perm.group_set.remove(group)
    group.user_set.add(user)
    group.delete()
    user.is_superuser = True
    user.save()
    user.last_login = user.date_joined
    user.save()  # a sign-in timestamp alone is no change worth an event
    get_user_model().objects.create_user("newcomer")

    events = list(AuditEvent.objects.filter(id__gt=start).order_by("id"))
    got = [(e.action, e.object_repr, e.detail.get("op"), tuple(e.detail.get("members", ())))
           for e in events]
    assert got == [
        ("user.permissions_change", "clinician", "add", ("synthesis.download_syntheticcohort",)),
        ("user.groups_change", "clinician", "add", ("coordinator",)),
        ("user.groups_change", "clinician", "remove", ("clinician", "coordinator")),
        ("group.create", "shadow-admins", None, ()),
        ("group.permissions_change", "shadow-admins", "add", ("synthesis.download_syntheticcohort",)),
        ("group.permissions_change", str(perm), "remove", ("shadow-admins",)),
        ("user.groups_change", "shadow-admins", "add", ("clinician",)),
        ("group.delete", "shadow-admins", None, ()),
        ("user.change", "clinician", None, ()),
        ("user.create", "newcomer", None, ()),
    ]
    assert events[-2].detail["changes"] == {"is_superuser": {"from": False, "to": True}}


@pytest.mark.django_db(transaction=True)
def test_the_acting_user_is_named_when_served_over_asgi(personas):
    """daphne serves the portal over ASGI: the middleware's context reaches the model signals."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    admin = personas["administrator"]
    admin.is_staff = True
    admin.save()
    client = AsyncClient()
    async_to_sync(client.aforce_login)(admin)
    r = async_to_sync(client.post)(f"/admin/accounts/user/{admin.pk}/change/",
                                   _form_data(admin, email="ada@hosp-a.example.org"))
    assert r.status_code == 302
    event = AuditEvent.objects.filter(action="user.change", object_id=str(admin.pk)).order_by("-id").first()
    assert event.actor_name == "administrator"
    assert event.detail["changes"]["email"]["to"] == "ada@hosp-a.example.org"
