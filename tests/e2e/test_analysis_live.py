"""An analysis study end to end with real processes and a real browser: a SuperLink and three
SuperNodes (TLS + node authentication) holding parts of a generated sickle cell disease cohort,
the portal (daphne for the browser, a live server for the nodes' approval checks and the run's
events), a real Celery worker. A coordinator creates the study in the form with its Analysis
section, the hospitals approve it, the coordinator starts the analysis; a clinician watches the
phases arrive and reads the Kaplan-Meier plot (bands, numbers at risk) and the forest plot."""
from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import shot, wait_js
from tests.e2e.test_csp import LISTENER as CSP_LISTENER

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NODES = ("hosp-a-node", "hosp-b-node", "hosp-c-node")
USE_CASE = "SCD"
GROUP_BY = "genotype"


def _cohort(n: int, seed: int):
    from fl_engine import cohort

    return cohort.generate_scd_cohort(n=n, seed=seed)


@pytest.fixture
def federation(tmp_path, settings, live_server, people, django_db_blocker):
    """Three hospital nodes of the people's organisation with announced SCD datasets (no study:
    the coordinator creates it in the browser) and a Celery worker in this process."""
    from celery.contrib.testing.worker import start_worker

    from etl.registry import DatasetRegistry
    from fl_engine.cohort import split_nodes
    from fl_engine.deploy.local import LocalFederation
    from fl_engine.deploy.pki import ensure_node_keys
    from portal.celery import app as celery_app
    from portal.datasets.services import announce
    from portal.nodes import services as node_services
    from portal.nodes.models import WorkerNode

    settings.MEDIA_ROOT = tmp_path / "media"
    parts = split_nodes(_cohort(900, 17), (0.45, 0.35, 0.2), seed=17)
    admin, org = people["admin"], people["nodeoperator"].organisation
    with LocalFederation(tmp_path / "fed", events_key_file=settings.RUN_EVENTS_KEY_FILE) as fed:
        settings.FLOWER_CONTROL_ADDRESS = fed.address
        settings.FLOWER_PKI_DIR = fed.pki.ca_cert.parent
        settings.PORTAL_BASE_URL = live_server.url
        settings.ROUND_TIMEOUT_S = 120
        nodes = {}
        for name, part in zip(NODES, parts):
            ndir = tmp_path / "fed" / "nodes" / name
            keys = ensure_node_keys(ndir / "keys")
            node = node_services.register_node(admin, org, name, keys.public_text())
            (ndir / "token").write_text(node_services.approve_node(admin, node))
            fed.add_node(name, part.reset_index(drop=True), dataset="scd", use_case=USE_CASE,
                         node_options={"manager": live_server.url, "token-file": str(ndir / "token"),
                                       "approval-cache-s": "1"})
            WorkerNode.objects.filter(pk=node.pk).update(flower_node_id=fed.node_ids[name])
            nodes[name] = WorkerNode.objects.get(pk=node.pk)
        fed.wait_nodes_online()
        datasets = [announce(nodes[name], None, DatasetRegistry(tmp_path / "fed" / "nodes" / name / "data")
                             .get("scd").announcement())[0] for name in NODES]
        celery_app.control.purge()
        with django_db_blocker.unblock(), start_worker(celery_app, pool="threads", concurrency=2,
                                                       queues=["celery", settings.CONCLUSIONS_QUEUE],
                                                       perform_ping_check=False, shutdown_timeout=30):
            yield {"fed": fed, "datasets": datasets, "sizes": [len(p) for p in parts]}


def _wait_through_reload(page, expression: str, timeout_s: float):
    """wait_js across the page's own reload (a finished run reloads once to show its report)."""
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return wait_js(page, expression, timeout_s=max(1.0, deadline - time.monotonic()))
        except Error:  # the execution context went with the reload: ask the new page
            if time.monotonic() > deadline:
                raise
            page.wait_for_load_state()


def _create_study_in_the_form(page, url, datasets) -> int:
    page.goto(f"{url}/studies/new/")
    page.get_by_label("Title").fill("SCD registry description")
    page.get_by_label("Disease (use case)").select_option(USE_CASE)
    page.get_by_label("Survival endpoint").select_option("os")
    page.locator("#field-feature_groups input[value=cytogenetic]").uncheck()
    page.locator("#field-feature_groups input[value=clinical]").check()
    for ds in datasets:
        page.locator(f"#field-datasets input[value='{ds.pk}']").check()
    page.get_by_label("Minimum hospitals per round").fill("3")
    page.get_by_label("Run a federated analysis").check()
    page.get_by_label("Group by").fill(GROUP_BY)
    page.get_by_label("Cox stratified by hospital").check()
    page.get_by_label("Time grid step (months)").fill("3")
    page.get_by_role("button", name="Save and mark ready").click()
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def test_coordinator_creates_an_scd_analysis_and_a_clinician_reads_its_plots(federation, people, login):
    from fl_engine.analytics.settings import validate_analysis
    from portal.studies import services
    from portal.studies.models import Run, Study

    page = login("coordinator")
    study_id = _create_study_in_the_form(page, login.url, federation["datasets"])
    study = Study.objects.get(pk=study_id)
    assert study.analysis == validate_analysis(USE_CASE, "os", study.analysis)
    assert study.analysis["group_by"] == GROUP_BY and study.analysis["cox_stratified"] is True
    assert page.locator("#start-analysis").count() == 1
    # the button refuses until the hospitals approve
    page.locator("#start-analysis").click()
    assert "awaiting the node operators' approval" in page.content()
    for ds in federation["datasets"]:
        services.decide_approval(people["nodeoperator"], study, ds, "approved")
    page.goto(f"{login.url}/studies/{study_id}/")
    page.locator("#start-analysis").click()
    page.wait_for_url(re.compile(r".*/analysis-runs/\d+/$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert Run.objects.get(pk=run_id).kind == "analysis"

    # the clinician, in the same browser after the coordinator leaves
    page.context.clear_cookies()
    page.add_init_script(CSP_LISTENER)  # every page from here: the policy refuses nothing the page does
    page = login("clinician")
    page.goto(f"{login.url}/analysis-runs/{run_id}/")
    wait_js(page, "window.fedhaemLive === true || document.getElementById('analysis-report') !== null")
    assert page.locator("#phase-describe").count() == 1 and page.locator("#start-analysis").count() == 0
    # the phases arrive over the websocket while the hospitals compute (unless it already ended)
    _wait_through_reload(page, "window.fedhaemPoints >= 1 || document.getElementById('analysis-report') !== null",
                         timeout_s=300)
    if page.locator("#analysis-report").count() == 0:
        states = [page.locator(f"#phase-{p}").get_attribute("data-state") for p in ("describe", "km", "cox")]
        assert "running" in states and states[0] != "waiting", states
        shot(page, "analysis-live-running")
    # finished: the page reloads itself to show the report (or shows it when the run was quick)
    _wait_through_reload(page, "document.getElementById('analysis-report') !== null", timeout_s=400)
    run = Run.objects.get(pk=run_id)
    assert run.status == "finished", run.error
    rep = run.analysis_report.content
    phases = [e.body.get("phase") for e in run.events.filter(type="phase").order_by("seq")]
    assert phases[:2] == ["describe", "km"] and phases.count("cox") == rep["cox"]["iterations"], phases
    assert rep["hospitals"] == list(NODES) and rep["use_case"] == USE_CASE
    _wait_through_reload(page, "window.fedhaemAnalysisDrawn === true", timeout_s=30)
    assert [page.locator(f"#phase-{p}").get_attribute("data-state") for p in ("describe", "km", "cox")] == ["done"] * 3

    if rep["notes"]:  # what was merged or suppressed is said on the page
        assert f"{len(rep['notes'])} note" in page.locator("#analysis-notes").inner_text()
    groups = list(rep["km"]["groups"])
    assert len(groups) >= 2, rep["notes"]
    # each group: upper band, lower band (filled to it) and the curve
    assert page.locator("#chart-km .scatterlayer .trace").count() == 3 * len(groups)
    assert page.locator("#chart-km .legendtext").all_text_contents() == groups
    at_risk = page.locator("#at-risk tbody tr")
    assert at_risk.count() == len(groups)
    first = at_risk.first.locator("td").first.inner_text()
    assert first == str(rep["km"]["at_risk_table"]["groups"][groups[0]][0])
    assert "Log-rank test" in page.locator("#logrank").inner_text()
    assert "Log-rank stratified by hospital" in page.locator("#logrank").inner_text()

    cox = rep["cox"]
    assert cox["stratified"] is True
    points = page.locator("#chart-forest .scatterlayer .trace .point")
    assert points.count() == len(cox["covariates"])
    ticks = page.locator("#chart-forest .yaxislayer-above .ytick text").all_text_contents()
    assert sorted(ticks) == sorted(cox["covariates"])
    rows = page.locator("#cox-table tbody tr")
    assert rows.count() == len(cox["covariates"])
    assert rows.first.locator("td").nth(2).inner_text() == f"{cox['hr'][0]:.3f}"
    assert page.locator("#histograms .chart").count() >= 1
    with page.expect_download() as dl:
        page.locator("#csv-cox").click()
    assert dl.value.suggested_filename == f"fedhaem-analysis-run-{run_id}-cox.csv"
    text = open(dl.value.path()).read()
    assert text.splitlines()[0] == "covariate,coef,se,hr,hr_lower,hr_upper,p"
    assert len(text.splitlines()) == 1 + len(cox["covariates"])
    assert page.evaluate("window.__csp") == []
    shot(page, "analysis-live-clinician")
