"""Browser-test fixtures: the portal served by daphne in its own process (HTTP + websockets)
on the test database, the real development identity provider, and Debian's Chromium driven by
Playwright. Each test logs in through the provider's login page like a person would."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Playwright's sync API keeps an event loop on the main thread; the test's own ORM calls are
# still plain synchronous code, so Django's async-safety guard would only get in the way.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def screenshot_dir() -> Path:
    root = Path(os.environ.get("FEDHAEM_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))
    path = root / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url(sd: dict) -> str:
    engine = sd["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{sd['NAME']}"
    from urllib.parse import quote

    auth = quote(sd.get("USER") or "")
    if sd.get("PASSWORD"):
        auth += ":" + quote(sd["PASSWORD"])
    host = sd.get("HOST") or "127.0.0.1"
    port = f":{sd['PORT']}" if sd.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{sd['NAME']}"


# Per module, not per session: the sync API keeps an event loop running in the main thread while
# it is open, and the tests after the browser's (async_to_sync in the portal) must not inherit it.
@pytest.fixture(scope="module")
def chromium_browser():
    if not CHROMIUM.exists():
        pytest.skip(f"browser test: {CHROMIUM} is absent (install Debian's chromium; `.ci/run` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def portal_server(django_db_setup, django_db_blocker, dev_idp, live_server):
    """Base URL of a daphne process serving `portal.asgi` on the test database, whose OIDC
    endpoints point at the development provider (which knows its callback URL)."""
    from django.conf import settings
    from django.db import connection

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # live_server (the other OIDC tests) keeps working when both run in one session.
    dev_idp.setup(Path(settings.VAR_DIR) / "secrets" / "oidc_client_secret",
                  [f"{url}/oidc/callback/", f"{live_server.url}/oidc/callback/"], [f"{url}/", f"{live_server.url}/"])
    env = dict(os.environ)
    env.update({k: v for k, v in dev_idp.oidc_settings().items()})
    env.update({
        "DATABASE_URL": _database_url(connection.settings_dict),
        "FEDHAEM_VAR_DIR": str(settings.VAR_DIR), "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "OIDC_ISSUER": dev_idp.issuer, "DEV_IDP_PORT": str(dev_idp.port),
        "PORTAL_BASE_URL": url, "DEBUG": "true",  # DEBUG: static files straight from the finders
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    })
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log_path = Path(settings.VAR_DIR) / "logs" / f"e2e-portal-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "portal.asgi:application"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the portal (daphne) exited; see {log_path}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"the portal (daphne) did not listen on {port}; see {log_path}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def browser_page(chromium_browser):
    """A fresh browser context at tablet width (1024 x 900 CSS pixels), Europe/Madrid clock."""
    context = chromium_browser.new_context(viewport={"width": 1024, "height": 900}, accept_downloads=True,
                                           timezone_id="Europe/Madrid")
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture
def login(portal_server, browser_page, dev_idp):
    """login(username) walks the real OIDC authorization-code flow in the browser: the portal
    redirects to the provider's login page, the person types their name and password, the
    provider redirects back, the portal shows the role's home page."""

    def _login(username: str):
        page = browser_page
        page.goto(f"{portal_server}/")
        page.get_by_role("link", name="Sign in with your institution").click()
        page.wait_for_url(f"{dev_idp.issuer.rsplit('/o', 1)[0]}/accounts/login/**")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(dev_idp.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{portal_server}/")
        return page

    _login.url = portal_server
    return _login


@pytest.fixture
def people(transactional_db):
    """The provider's people as portal users before their first login (so that tests can build
    data owned by them); their roles and organisation are set again from the claims at login."""
    from django.contrib.auth import get_user_model

    from portal.accounts.models import Organisation
    from portal.accounts.roles import ensure_role_groups, set_user_roles
    from portal.devidp.people import PEOPLE

    ensure_role_groups()
    User = get_user_model()
    out = {}
    for username, given, family, roles, org in PEOPLE:
        organisation, _ = Organisation.objects.get_or_create(
            code=org, defaults={"name": {"hosp-a": "Hospital A", "hosp-b": "Hospital B", "hosp-c": "Hospital C",
                                         "hosp-z": "Hospital Z"}.get(org, org)})
        user = User.objects.create_user(username, first_name=given, last_name=family, organisation=organisation)
        set_user_roles(user, roles)
        out[username] = User.objects.get(pk=user.pk)
    return out


def wait_js(page, expression: str, timeout_s: float = 20.0):
    """Wait until `expression` is truthy in the page. Playwright's own wait_for_function evals
    its predicate inside the page, which the portal's Content-Security-Policy refuses; this
    polls page.evaluate (DevTools protocol, outside the page's policy) instead."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still falsy after {timeout_s} s: {expression}")
        page.wait_for_timeout(50)


def shot(page, role: str) -> Path:
    path = screenshot_dir() / f"{role}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
