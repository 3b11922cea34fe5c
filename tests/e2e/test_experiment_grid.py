"""The experiment grid in a real browser: a coordinator starts a small grid from the comparison
page's form; the page opens the grid's websocket; the task runs it (here the test plays the
Celery worker); the page hears of the end and reloads to the table and the three charts."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import shot, wait_js
from tests.portal.pages_world import build_world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_coordinator_runs_a_grid_from_the_comparison_page(people, p384_public_key, login):
    from portal.experiments import services
    from portal.experiments.models import GridRun

    w = build_world(people["admin"], people["coordinator"], people["nodeoperator"], p384_public_key)
    page = login("coordinator")
    page.goto(f"{login.url}/studies/{w['study'].pk}/compare/")
    form = page.locator("#grid-start-form")
    form.get_by_label("Pooled data").select_option("generated")
    form.get_by_label("Patients (generated cohort)").fill("400")
    form.get_by_label("Seeds").fill("1")
    form.get_by_label("Rounds at most").fill("99")
    form.get_by_label("Bootstrap samples").fill("20")
    form.get_by_label("5 nodes (45/20/15/10/10 %)").uncheck()
    form.get_by_role("button", name="Run the experiment grid").click()
    # refused with the reason, nothing stored
    page.wait_for_load_state()
    assert "rounds" in page.content() and GridRun.objects.count() == 0
    form = page.locator("#grid-start-form")
    form.get_by_label("Pooled data").select_option("generated")
    form.get_by_label("Patients (generated cohort)").fill("400")
    form.get_by_label("Seeds").fill("1")
    form.get_by_label("Rounds at most").fill("2")
    form.get_by_label("Bootstrap samples").fill("20")
    if form.get_by_label("5 nodes (45/20/15/10/10 %)").is_checked():
        form.get_by_label("5 nodes (45/20/15/10/10 %)").uncheck()
    form.get_by_role("button", name="Run the experiment grid").click()
    page.wait_for_load_state()
    grid = GridRun.objects.get()
    assert grid.status == "queued" and grid.config["federations"] == [3] and grid.generated_n == 400
    assert page.locator(f'[data-grid-status="{grid.pk}"]').inner_text() == "Queued"
    wait_js(page, "window.fedhaemGridLive === 1")  # the grid's websocket is open
    assert services.execute_grid(grid.pk) == "finished"
    # the end is pushed (or polled), the page reloads with the results
    page.wait_for_selector("#grid-global-table", timeout=30_000)
    table = page.locator("#grid-global-table").inner_text()
    assert "Centralised" in table and "Federated, 3 nodes" in table and "IPSS-M" in table
    for chart in ("#grid-chart-bars", "#grid-chart-rounds", "#grid-km-1", "#grid-km-2"):
        page.wait_for_selector(f"{chart} .main-svg")
    assert page.locator("#grid-chart-bars .ytitle").text_content() == "Harrell C"
    assert page.locator("#grid-km-2 .gtitle").text_content() == "IPSS-M"
    shot(page, "coordinator_grid")
