"""Sign-out ends the identity provider's session too (OpenID Connect RP-Initiated Logout): the
next sign-in asks for the password again."""
import re

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def _on_provider_login_form(response, dev_idp) -> bool:
    return (response.url.startswith(dev_idp.issuer.rsplit("/o", 1)[0] + "/accounts/login/")
            and 'name="password"' in response.text)


def test_sign_out_ends_the_provider_session(oidc_portal, dev_idp, settings):
    settings.PORTAL_BASE_URL = oidc_portal.url  # the address registered as post-logout URI
    s = oidc_portal("clinician")
    assert s.get(f"{oidc_portal.url}/api/me/", timeout=10).status_code == 200

    # While the provider session lives, a new portal sign-in needs no password (single sign-on):
    assert s.cookies.get("sessionid")
    s.cookies.set("sessionid", None)  # the portal session ends (expiry), the provider's does not
    again = s.get(f"{oidc_portal.url}/oidc/authenticate/", timeout=30)
    assert not _on_provider_login_form(again, dev_idp)
    assert s.get(f"{oidc_portal.url}/api/me/", timeout=10).json()["username"] == "clinician"

    home = s.get(f"{oidc_portal.url}/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', home.text).group(1)
    out = s.post(f"{oidc_portal.url}/oidc/logout/", data={"csrfmiddlewaretoken": csrf},
                 headers={"Referer": f"{oidc_portal.url}/"}, timeout=30)
    hops = [r.url for r in out.history] + [out.url]
    assert any(h.startswith(f"{dev_idp.issuer}/logout/") and "id_token_hint=" in h for h in hops), hops
    assert s.get(f"{oidc_portal.url}/api/me/", timeout=10).status_code in (401, 403)

    # The provider session is gone: signing in again shows the password form.
    fresh = s.get(f"{oidc_portal.url}/oidc/authenticate/", timeout=30)
    assert _on_provider_login_form(fresh, dev_idp), fresh.url


def test_logout_url_names_the_token_and_the_registered_return_address(rf, settings):
    from portal.accounts.oidc import provider_logout_url

    settings.OIDC_OP_LOGOUT_ENDPOINT = "https://idp.example.org/realms/fedhaem/protocol/openid-connect/logout"
    settings.PORTAL_BASE_URL = "https://fedhaem.example.org"
    request = rf.post("/oidc/logout/")
    request.session = {"oidc_id_token": "header.payload.signature"}
    url = provider_logout_url(request)
    assert url.startswith(settings.OIDC_OP_LOGOUT_ENDPOINT + "?")
    assert "id_token_hint=header.payload.signature" in url
    assert "post_logout_redirect_uri=https%3A%2F%2Ffedhaem.example.org%2F" in url
    settings.OIDC_OP_LOGOUT_ENDPOINT = ""
    assert provider_logout_url(request) == "https://fedhaem.example.org/"
