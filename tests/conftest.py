"""Shared fixtures: an isolated var/ folder, the embedded Redis, persona users (one per role plus
an outsider from another organisation and a user without a role)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The var/ folder, Redis port and channel prefix are isolated by the `portal.testing` plugin.

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_OUTPUT = Path(os.environ.get("FEDHAEM_TEST_OUTPUT", REPO / "test-output"))


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test with a clear reason when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data test: {path} is absent (the public cohorts live in ../shared/data)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _embedded_redis():
    try:
        from django.conf import settings
    except ImportError:  # a node install (`fedhaem[node]`): no Django, and its tests need no Redis
        yield
        return

    if getattr(settings, "EMBEDDED_REDIS", False):
        from portal.ops.embedded import ensure_redis, stop_redis

        started = ensure_redis(settings.EMBEDDED_REDIS_PORT, settings.VAR_DIR)
        yield
        if started:
            stop_redis(settings.VAR_DIR)
    else:
        yield


PERSONA_ROLES = {
    "clinician": ("clinician", "hosp-a"),
    "coordinator": ("coordinator", "hosp-a"),
    "data_manager": ("data_manager", "hosp-a"),
    "node_operator": ("node_operator", "hosp-a"),
    "administrator": ("administrator", "hosp-a"),
    "outsider": ("node_operator", "hosp-z"),
    "norole": (None, "hosp-a"),
}


@pytest.fixture
def orgs(db):
    from portal.accounts.models import Organisation

    return {
        "hosp-a": Organisation.objects.get_or_create(code="hosp-a", defaults={"name": "Hospital A"})[0],
        "hosp-z": Organisation.objects.get_or_create(code="hosp-z", defaults={"name": "Hospital Z"})[0],
    }


@pytest.fixture
def personas(db, orgs):
    """username -> User, one per role (+ outsider, norole), as the OIDC login would leave them."""
    from django.contrib.auth import get_user_model

    from portal.accounts.roles import ensure_role_groups, set_user_roles

    ensure_role_groups()
    User = get_user_model()
    out = {}
    for name, (role, org) in PERSONA_ROLES.items():
        user = User.objects.create_user(name, email=f"{name}@{org}.example.org", organisation=orgs[org])
        set_user_roles(user, [role] if role else [])
        out[name] = User.objects.get(pk=user.pk)  # fresh permission cache
    return out


@pytest.fixture
def api():
    """api(user) -> a DRF test client authenticated with the user's real API token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user=None):
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def p384_public_key() -> str:
    return fresh_p384_key()


def fresh_p384_key() -> str:
    """A new EC P-384 public key (PEM): one key names one node, so each node gets its own."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
def approved_node(db, orgs, personas, p384_public_key):
    """An approved worker node of hospital A and its API token: (node, token)."""
    from portal.nodes import services

    from portal.nodes.models import WorkerNode

    node = services.register_node(personas["administrator"], orgs["hosp-a"], "hosp-a-node", fresh_p384_key())
    token = services.approve_node(personas["administrator"], node)
    # the id the SuperLink returns when approval registers the key (no SuperLink in these tests)
    WorkerNode.objects.filter(pk=node.pk).update(flower_node_id="9000000000000000001")
    node.refresh_from_db()
    return node, token


@pytest.fixture
def mds_dataset(approved_node):
    """A 300-patient MDS dataset (age, hb, overall survival) announced by `approved_node`."""
    from portal.datasets.models import Dataset

    node, _ = approved_node
    return Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                  patient_count=300, feature_schema=["age", "hb", "os_months", "os_event"],
                                  fingerprint="f" * 64)


@pytest.fixture(scope="session")
def dev_idp():
    """The real development identity provider (django-oauth-toolkit, OIDC) in its own process."""
    from django.conf import settings

    from portal.devidp.runner import DevIdentityProvider, free_port

    idp = DevIdentityProvider(settings.VAR_DIR, free_port())
    idp.start()
    yield idp
    idp.stop()


@pytest.fixture(scope="session")
def _idp_knows_live_server(dev_idp, live_server, django_db_blocker):
    from django.conf import settings

    dev_idp.setup(settings.VAR_DIR / "secrets" / "oidc_client_secret",
                  [f"{live_server.url}/oidc/callback/"], [f"{live_server.url}/"])
    return live_server


@pytest.fixture
def oidc_portal(dev_idp, _idp_knows_live_server, live_server, settings):
    """The live portal wired to the development provider; returns a login(username) helper that
    walks the real authorization-code flow (PKCE) with an HTTP client and returns its session."""
    import re

    import requests

    for key, value in dev_idp.oidc_settings().items():
        setattr(settings, key, value)

    def login(username: str, password: str | None = None) -> requests.Session:
        s = requests.Session()
        page = s.get(f"{live_server.url}/oidc/authenticate/", timeout=30)
        assert page.url.startswith(dev_idp.issuer.rsplit("/o", 1)[0] + "/accounts/login/"), page.url
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        nxt = re.search(r'name="next" value="([^"]*)"', page.text).group(1)
        done = s.post(page.url, data={"csrfmiddlewaretoken": csrf, "username": username,
                                      "password": password or dev_idp.password,
                                      "next": nxt.replace("&amp;", "&")},
                      headers={"Referer": page.url}, timeout=30)
        s.last_response = done
        return s

    login.url = live_server.url
    return login
