"""A synthetic-cohort generation with real processes: a SuperLink and two SuperNodes (TLS + node
authentication), the portal (live server) and a real Celery worker. A coordinator starts a
2-round VAE-BGM generation through the portal service; per-round scores arrive through the
metrics endpoint, and the finished run leaves a cohort with its SAFE report and data card."""
from __future__ import annotations

import time

import pytest

from tests.portal.federation_world import portal_federation

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NODES = ("hosp-a", "hosp-b")
FEATURES = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "TP53", "SF3B1"]


@pytest.fixture
def federation(tmp_path, settings, live_server, personas, orgs, django_db_blocker):
    settings.MEDIA_ROOT = tmp_path / "media"
    with portal_federation(tmp_path, settings, live_server, personas, django_db_blocker, nodes=NODES,
                           fractions=(0.6, 0.4), n_patients=360, seed=4, round_timeout_s=180, concurrency=1,
                           study={"title": "Synthetic E2E", "min_nodes": 2,
                                  "hyperparameters": {"local_epochs": 1}}) as world:
        yield world


def test_two_round_vae_bgm_generation_leaves_a_validated_cohort(federation, personas):
    from portal.studies.models import Run
    from portal.synthesis import services
    from portal.synthesis.models import SyntheticCohort

    run = services.start_generation_run(personas["coordinator"], federation["study"], generator="vae_bgm",
                                        rounds=2, local_epochs=2, features=FEATURES,
                                        generator_params={"hidden": 32, "latent": 4, "n_components": 3})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.active:
            break
        time.sleep(1)
    assert run.status == Run.Status.FINISHED, run.error
    values = {(m.round, m.node, m.name): m.value for m in run.metrics.all()}
    for r in (1, 2):
        for name in ("csf", "gsf", "nndr_p5"):
            assert 0 <= values[(r, "global", name)] <= 1, (r, name)
        for node in NODES:
            assert 0 <= values[(r, node, "alone_csf")] <= 1, (r, node)
    cohort = SyntheticCohort.objects.get(run=run)
    assert cohort.generator == "vae_bgm" and not cohort.released
    assert cohort.row_count == sum(int(values[(2, n, "n_train")]) for n in NODES)
    assert cohort.validation_report["n_nodes"] == 2 and cohort.validation_report["gate"]["checks"]
    assert cohort.data_card["rounds"] == 2
    with cohort.file.open("rb") as f:
        header = f.readline().decode().strip().split(",")
    assert header == FEATURES + ["os_months", "os_event"]
