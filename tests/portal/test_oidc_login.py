"""Sign-in through the real authorization-code flow (PKCE) against the development provider."""
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("username, role", [
    ("clinician", "clinician"), ("coordinator", "coordinator"), ("datamanager", "data_manager"),
    ("nodeoperator", "node_operator"), ("admin", "administrator"),
])
def test_login_maps_role_claim_to_group(oidc_portal, username, role):
    from django.contrib.auth import get_user_model

    session = oidc_portal(username)
    assert session.last_response.status_code == 200
    assert session.last_response.url.rstrip("/") == oidc_portal.url
    me = session.get(f"{oidc_portal.url}/api/me/", timeout=10).json()
    assert me["username"] == username  # from preferred_username, not an e-mail hash
    assert me["roles"] == [role]
    assert me["organisation"] == "hosp-a"
    user = get_user_model().objects.get(username=username)
    assert list(user.groups.values_list("name", flat=True)) == [role]
    assert user.is_staff == (role == "administrator")


def test_user_without_role_gets_a_clear_no_access_page(oidc_portal):
    session = oidc_portal("norole")
    assert session.last_response.status_code == 403
    assert "No access yet" in session.last_response.text
    assert "holds no FedHaem role" in session.last_response.text
    assert session.get(f"{oidc_portal.url}/api/studies/", timeout=10).status_code == 403


def test_wrong_password_does_not_sign_in(oidc_portal):
    session = oidc_portal("clinician", password="not-the-password")
    assert "Wrong username or password" in session.last_response.text
    assert session.get(f"{oidc_portal.url}/api/me/", timeout=10).status_code in (401, 403)


def test_roles_follow_the_provider_at_each_login(oidc_portal, settings):
    """A role removed in the identity provider is removed in the portal at the next login."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    User = get_user_model()
    user = User.objects.create_user("outsider")
    user.groups.add(Group.objects.get_or_create(name="administrator")[0])
    session = oidc_portal("outsider")
    me = session.get(f"{oidc_portal.url}/api/me/", timeout=10).json()
    assert me["roles"] == ["node_operator"] and me["organisation"] == "hosp-z"
