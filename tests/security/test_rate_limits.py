"""Guessing is slowed to a stop: 30 wrong passwords at the development provider's sign-in form,
or 30 wrong API tokens from one address, lock out with 429, the right credential included, for
the lockout period."""
from __future__ import annotations

import re
import time

import pytest
import requests

ATTACKER = "192.0.2.10"  # TEST-NET address: only a value in the test client's request


@pytest.fixture
def clean_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_wrong_api_tokens_lock_the_address_out(personas, api, clean_cache, settings):
    from rest_framework.test import APIClient

    assert settings.TOKEN_AUTH_FAILURE_LIMIT == 20
    good = api(personas["clinician"])
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    codes = [bad.get("/api/studies/", REMOTE_ADDR=ATTACKER).status_code for _ in range(30)]
    assert codes[:20] == [401] * 20 and codes[20:] == [429] * 10
    locked = good.get("/api/studies/", REMOTE_ADDR=ATTACKER)  # the right token, same address
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert good.get("/api/studies/", REMOTE_ADDR="192.0.2.11").status_code == 200  # others unaffected
    from portal.audit.models import AuditEvent

    lockouts = AuditEvent.objects.filter(action="auth.token_lockout")
    assert [e.detail["address"] for e in lockouts] == [ATTACKER]


def test_session_users_are_not_counted(personas, clean_cache, client):
    client.force_login(personas["clinician"])
    for _ in range(25):
        assert client.get("/api/studies/", REMOTE_ADDR=ATTACKER).status_code == 200


@pytest.fixture
def own_provider(tmp_path, monkeypatch):
    """A development provider of its own (the shared one must not be locked), 3 s lockout."""
    from portal.devidp.runner import DevIdentityProvider, free_port

    monkeypatch.setenv("DEV_IDP_LOCKOUT_S", "3")
    var = tmp_path / "var"
    (var / "secrets").mkdir(parents=True)
    secret = var / "secrets" / "client"
    secret.write_text("s" * 32)
    idp = DevIdentityProvider(var, free_port())
    idp.setup(secret, ["http://127.0.0.1:1/oidc/callback/"])
    idp.start()
    yield idp
    idp.stop()


def _attempt(idp, username, password):
    s = requests.Session()
    url = f"http://127.0.0.1:{idp.port}/accounts/login/"
    page = s.get(url, timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return s.post(url, data={"csrfmiddlewaretoken": csrf, "username": username, "password": password},
                  headers={"Referer": url}, allow_redirects=False, timeout=10)


def test_thirty_wrong_passwords_lock_the_account(own_provider):
    codes = [_attempt(own_provider, "clinician", f"guess-{i}").status_code for i in range(30)]
    assert codes[:10] == [200] * 10 and codes[10:] == [429] * 20  # 200: the form again, wrong password
    right = _attempt(own_provider, "clinician", own_provider.password)
    assert right.status_code == 429 and "locked" in right.text and "devidp_sessionid" not in right.cookies
    assert _attempt(own_provider, "coordinator", own_provider.password).status_code == 302
    time.sleep(3.5)  # the lockout period ends
    assert _attempt(own_provider, "clinician", own_provider.password).status_code == 302
