"""The live generation page in a real browser: CSF / GSF / NNDR p5 points pushed over the run's
websocket draw the federated line and one line per hospital alone."""
from __future__ import annotations

import threading

import pytest

from tests.e2e.conftest import shot, wait_js
from tests.portal.pages_world import build_world

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world(people, p384_public_key):
    return build_world(people["admin"], people["coordinator"], people["nodeoperator"], p384_public_key)


def test_clinician_watches_generation_scores_arrive(world, people, login):
    from portal.studies import services
    from portal.studies.models import Run

    run = Run.objects.create(study=world["study"], kind=Run.Kind.SYNTHESIS, rounds=3, created_by=people["coordinator"],
                             status=Run.Status.RUNNING,
                             config={"datasets": [], "generation": {"generator": "vae_bgm", "local_epochs": 5,
                                                                    "rows": 0, "features": ["age", "hb"]}})
    page = login("clinician")
    page.goto(f"{login.url}/runs/{run.pk}/")  # the survival run URL sends generation runs to their page
    wait_js(page, "window.fedhaemLive === true")
    assert "bench/synthetic_mds.py" in page.content()

    def push(r):
        metrics = [{"node": "global", "name": k, "value": 0.7 + r / 50} for k in ("csf", "gsf", "nndr_p5")]
        for node in ("hosp-a-node", "hosp-b-node"):
            metrics += [{"node": node, "name": f"alone_{k}", "value": 0.6 + r / 50} for k in ("csf", "gsf", "nndr_p5")]
        services.ingest_round(run, r, metrics)

    for r in (1, 2):
        t = threading.Thread(target=push, args=(r,))  # the channel layer cannot run under Playwright's loop
        t.start()
        t.join()
        wait_js(page, f"window.fedhaemPoints >= {9 * r}")
    assert page.locator("#progress-label").inner_text() == "2 of 3"
    for chart in ("csf", "gsf", "nndr_p5"):
        assert page.locator(f"#chart-{chart} .scatterlayer .trace").count() == 3  # federated + 2 alone
    shot(page, "generation-live")
