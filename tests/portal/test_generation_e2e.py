"""A synthetic-cohort generation with real processes: a SuperLink and two SuperNodes (TLS + node
authentication), the portal (live server) and a real Celery worker. A coordinator starts a
2-round VAE-BGM generation through the portal service; per-round scores arrive through the
metrics endpoint, and the finished run leaves a cohort with its SAFE report and data card."""
from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NODES = ("hosp-a", "hosp-b")
FEATURES = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "TP53", "SF3B1"]


@pytest.fixture
def federation(tmp_path, settings, live_server, personas, orgs, django_db_blocker):
    from celery.contrib.testing.worker import start_worker

    from etl.registry import DatasetRegistry
    from fl_engine.cohort import generate_mds_cohort, split_nodes
    from fl_engine.deploy.local import LocalFederation
    from portal.accounts.models import Organisation
    from portal.celery import app as celery_app
    from portal.datasets.services import announce
    from portal.nodes.models import WorkerNode
    from portal.studies import services
    from portal.studies.models import Study

    settings.MEDIA_ROOT = tmp_path / "media"
    cohort = generate_mds_cohort(n=360, seed=4)
    parts = split_nodes(cohort, (0.6, 0.4), seed=4)
    with LocalFederation(tmp_path / "fed") as fed:
        for name, part in zip(NODES, parts):
            fed.add_node(name, part.reset_index(drop=True), dataset="mds")
        fed.wait_nodes_online()
        settings.FLOWER_CONTROL_ADDRESS = fed.address
        settings.FLOWER_PKI_DIR = fed.pki.ca_cert.parent
        settings.PORTAL_BASE_URL = live_server.url
        settings.ROUND_TIMEOUT_S = 180
        datasets = []
        for name in NODES:
            org, _ = Organisation.objects.get_or_create(code=name, defaults={"name": name})
            node = WorkerNode.objects.create(name=name, organisation=org, status="approved",
                                             flower_node_id=fed.node_ids[name],
                                             public_key=(tmp_path / "fed" / "nodes" / name / "keys" /
                                                         "node_key.pub").read_text())
            entry = DatasetRegistry(tmp_path / "fed" / "nodes" / name / "data").get("mds")
            datasets.append(announce(node, None, entry.announcement())[0])
        study = Study.objects.create(title="Synthetic E2E", use_case="MDS", owner=personas["coordinator"],
                                     min_nodes=2, hyperparameters={"local_epochs": 1})
        study.datasets.set(datasets)
        for ds in datasets:
            ds.node.organisation = personas["node_operator"].organisation
            ds.node.save()
            services.decide_approval(personas["node_operator"], study, ds, "approved")
        with django_db_blocker.unblock(), start_worker(celery_app, pool="threads", concurrency=1,
                                                       perform_ping_check=False, shutdown_timeout=30):
            yield {"fed": fed, "study": study}


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
