"""The Content-Security-Policy holds on every main page, for every role, in a real browser:
no inline script, no inline handler, nothing the policy refuses (a violation listener installed
before any page script, plus the console)."""
from __future__ import annotations

import pytest

from tests.portal.pages_world import build_world

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LISTENER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + e.sourceFile + ":" + e.lineNumber);
});
"""
PERSONAS = ["clinician", "coordinator", "datamanager", "nodeoperator", "admin"]


@pytest.fixture
def world(people, p384_public_key):
    return build_world(people["admin"], people["coordinator"], people["nodeoperator"], p384_public_key,
                       with_curves=True)


def _pages(w) -> list[str]:
    study, run = w["study"].pk, w["run"].pk
    return ["/", "/studies/", f"/studies/{study}/", f"/studies/{study}/compare/", f"/studies/{study}/report/",
            "/studies/new/", "/runs/", f"/runs/{run}/", "/models/", f"/models/{w['model'].pk}/", "/nodes/",
            "/datasets/", f"/datasets/{w['dataset'].pk}/", "/cohorts/", f"/cohorts/{w['released'].pk}/",
            f"/cohorts/{w['unreleased'].pk}/", "/audit/", "/preferences/"]


@pytest.mark.parametrize("username", PERSONAS)
def test_main_pages_raise_no_csp_violation(world, login, browser_page, username):
    page = browser_page
    page.add_init_script(LISTENER)
    console = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    login(username)
    seen = []
    for url in _pages(world):
        response = page.goto(f"{login.url}{url}")
        assert "script-src 'self'" in response.headers.get("content-security-policy", ""), url
        page.wait_for_timeout(250)  # charts draw and websockets open after load
        seen += [f"{url}: {v}" for v in page.evaluate("window.__csp")]
    assert not seen, seen
    assert not console, console


def test_the_policy_refuses_inline_script_and_sign_out_still_reaches_the_provider(world, login, browser_page,
                                                                               dev_idp):
    page = browser_page
    page.add_init_script(LISTENER)
    login("clinician")
    page.evaluate("""() => {
        const s = document.createElement("script"); s.textContent = "window.__ran = true";
        document.body.appendChild(s);
        const b = document.createElement("button"); b.setAttribute("onclick", "window.__ran = true");
        document.body.appendChild(b); b.click();
    }""")
    page.wait_for_timeout(100)
    assert page.evaluate("window.__ran") is None
    assert len(page.evaluate("window.__csp")) == 2  # both refused and reported: the listener works
    # form-action lets the sign-out POST redirect to the provider's end-session endpoint and back
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{login.url}/")
    page.goto(f"{login.url}/oidc/authenticate/")
    page.wait_for_url(f"{dev_idp.issuer.rsplit('/o', 1)[0]}/accounts/login/**")
