"""Each role's main path in a real browser (Chromium), logged in through the real OIDC flow.
Every test ends by saving a screenshot of its final page under test-output/screenshots/."""
from __future__ import annotations

import threading

import pytest

from tests.e2e.conftest import shot, wait_js
from tests.portal.pages_world import build_world

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world(people, p384_public_key):
    return build_world(people["admin"], people["coordinator"], people["nodeoperator"], p384_public_key)


def test_coordinator_creates_a_study_through_the_form_and_starts_a_run(people, p384_public_key, login):
    from portal.studies import services
    from portal.studies.models import Run, Study

    w = build_world(people["admin"], people["coordinator"], people["nodeoperator"], p384_public_key,
                    with_run=False)
    page = login("coordinator")
    page.get_by_role("link", name="New study").first.click()
    page.get_by_label("Title").fill("MDS leukaemia-free survival")
    page.get_by_label("Disease (use case)").select_option("MDS")
    page.get_by_label("Survival endpoint").select_option("lfs")
    dataset = page.get_by_role("group", name="Participating datasets").get_by_label("hosp-a-node · mds v1")
    dataset.check()
    # The form hides datasets lacking a chosen group, but keeps a checked one visible; the
    # server refuses it anyway: the dataset has no genomic column.
    page.get_by_label("Genomic (gene mutations)").check()
    page.get_by_label("Minimum hospitals per round").fill("1")
    page.get_by_role("button", name="Save and mark ready").click()
    # refused, with the reason next to the datasets field, nothing saved
    assert page.locator("#field-datasets .error").first.inner_text().endswith("has no genomic columns")
    assert not Study.objects.filter(title="MDS leukaemia-free survival").exists()
    page.get_by_label("Genomic (gene mutations)").uncheck()
    assert dataset.is_checked()
    page.get_by_role("button", name="Save and mark ready").click()
    page.wait_for_url("**/studies/*/")
    study = Study.objects.get(title="MDS leukaemia-free survival")
    assert study.status == "ready" and study.endpoint == "lfs" and list(study.datasets.all()) == [w["dataset"]]
    # hospital A's node operator approves (their own path is tested below), then the run starts
    services.decide_approval(people["nodeoperator"], study, w["dataset"], "approved")
    page.reload()
    page.get_by_label("Rounds for this run").fill("4")
    page.get_by_role("button", name="Start a run").click()
    page.wait_for_url("**/runs/*/")
    run = Run.objects.get(study=study)
    assert run.rounds == 4 and run.created_by.username == "coordinator"
    assert page.locator("#progress-label").inner_text() == "0 of 4"
    # cancelling asks for confirmation first; dismissing it keeps the run
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Cancel this run").click()
    page.wait_for_timeout(300)
    run.refresh_from_db()
    assert run.status == "queued"
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel this run").click()
    wait_js(page, "document.getElementById('run-status').dataset.status === 'cancelled'")
    run.refresh_from_db()
    assert run.status == "cancelled" and page.locator("#cancel-form").count() == 0
    shot(page, "coordinator")


def test_clinician_sees_live_points_arrive(world, people, login):
    from portal.studies import services
    from portal.studies.models import Run

    run = Run.objects.create(study=world["study"], rounds=3, created_by=people["coordinator"],
                             status=Run.Status.RUNNING, config={"datasets": []})
    page = login("clinician")
    assert "Runs in progress" in page.content()
    page.get_by_role("link", name=f"run {run.pk}").first.click()
    wait_js(page, "window.fedhaemLive === true")
    assert page.evaluate("window.fedhaemPoints") == 0

    def push(r):
        services.ingest_round(run, r, [{"node": "global", "name": "c_index", "value": 0.6 + r / 50},
                                       {"node": "hosp-a-node", "name": "c_index", "value": 0.58 + r / 50},
                                       {"node": "global", "name": "loss", "value": 3.1 - r / 10}])

    for r in (1, 2):
        # from another thread: the channel layer's async_to_sync cannot run under Playwright's loop
        t = threading.Thread(target=push, args=(r,))
        t.start()
        t.join()
        wait_js(page, f"window.fedhaemPoints >= {2 * r}")
    assert page.locator("#progress-label").inner_text() == "2 of 3"
    assert page.locator("#live-points").inner_text() == "4"
    assert page.locator("#chart-cindex .scatterlayer .trace").count() == 2  # global + hospital A
    # axis titles (plotly.js 3 takes {text: ...}; a bare string is silently dropped)
    assert page.locator("#chart-cindex .ytitle").text_content() == "C-index (Harrell)"
    assert page.locator("#chart-cindex .xtitle").text_content() == "Round"
    shot(page, "clinician")


def test_data_manager_downloads_released_cohort_and_is_refused_unreleased(world, login):
    from portal.audit.models import AuditEvent

    page = login("datamanager")
    page.get_by_role("link", name="Synthetic cohorts").first.click()
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download CSV").click()
    content = open(dl.value.path()).read()
    assert content.startswith("age,hb,os_months,os_event")
    response = page.goto(f"{login.url}/cohorts/{world['unreleased'].pk}/download/")
    assert response.status == 403
    assert "has not been released" in page.locator("#refusal").inner_text()
    assert AuditEvent.objects.filter(action="cohort.download", actor_name="datamanager").count() == 1
    assert AuditEvent.objects.filter(action="cohort.download_refused", actor_name="datamanager").count() == 1
    page.goto(f"{login.url}/cohorts/")
    shot(page, "data_manager")


def test_node_operator_sees_their_node_and_datasets_only(world, login):
    page = login("nodeoperator")
    # keyboard: the first Tab reaches the skip link, which moves focus to the page's content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    home = page.content()
    assert "Your datasets" in home and "312 patients" in home and "hosp-z-node" not in home
    page.get_by_role("link", name="Datasets").first.click()
    # the node's announcement is not in the catalogue until a clinician of the hospital registers it
    assert "312 patients" not in page.locator("tbody").inner_text()
    page.locator("#waiting").get_by_role("link", name="Register a dataset").click()
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "312 patients" in rows.first.inner_text()
    assert "a clinician of" in rows.first.inner_text()  # a node operator does not register it
    page.get_by_role("link", name="Nodes").first.click()
    assert page.locator("#node-hosp-a-node").is_visible()
    assert page.locator("#node-hosp-z-node").count() == 0
    assert page.get_by_role("button", name="Approve node hosp-z-node").count() == 0
    shot(page, "node_operator")


def test_administrator_approves_a_node(world, login):
    node = world["pending_node"]
    page = login("admin")
    assert "1</strong> awaiting approval" in page.content()
    page.get_by_role("link", name="Nodes").first.click()
    # Approval also registers the node's key with the SuperLink (absent here: the CLI gives up
    # after its own retries), hence the longer wait.
    page.get_by_role("button", name="Approve node hosp-z-node").click(timeout=120_000)
    page.wait_for_selector("#node-token", timeout=120_000)
    node.refresh_from_db()
    assert node.status == "approved" and node.approved_by.username == "admin"
    assert len(page.locator("#node-token").inner_text()) == 40  # the node's API token, shown once
    shot(page, "administrator")
