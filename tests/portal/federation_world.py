"""A real federation behind the portal, shared by the real-process portal tests: a SuperLink and
one SuperNode per hospital (TLS + node authentication) holding parts of a generated MDS cohort,
the matching portal rows (approved nodes, announced datasets, a study every node approved) and a
real Celery worker (threads pool, in this process so that it sees the test database) on the
configured broker."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def portal_federation(tmp_path, settings, live_server, personas, django_db_blocker, *, nodes, fractions,
                      n_patients: int, seed: int, study: dict, round_timeout_s: int, concurrency: int):
    """Yields {"fed": LocalFederation, "study": Study}; `study` holds the Study fields."""
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

    parts = split_nodes(generate_mds_cohort(n=n_patients, seed=seed), fractions, seed=seed)
    with LocalFederation(tmp_path / "fed") as fed:
        for name, part in zip(nodes, parts):
            fed.add_node(name, part.reset_index(drop=True), dataset="mds")
        fed.wait_nodes_online()
        settings.FLOWER_CONTROL_ADDRESS = fed.address
        settings.FLOWER_PKI_DIR = fed.pki.ca_cert.parent
        settings.PORTAL_BASE_URL = live_server.url
        settings.ROUND_TIMEOUT_S = round_timeout_s
        datasets = []
        for name in nodes:
            org, _ = Organisation.objects.get_or_create(code=name, defaults={"name": name})
            node = WorkerNode.objects.create(name=name, organisation=org, status="approved",
                                             flower_node_id=fed.node_ids[name],
                                             public_key=(tmp_path / "fed" / "nodes" / name / "keys" /
                                                         "node_key.pub").read_text())
            entry = DatasetRegistry(tmp_path / "fed" / "nodes" / name / "data").get("mds")
            datasets.append(announce(node, None, entry.announcement())[0])
        st = Study(use_case="MDS", owner=personas["coordinator"], **study)
        st.full_clean()
        st.save()
        st.datasets.set(datasets)
        for ds in datasets:
            ds.node.organisation = personas["node_operator"].organisation
            ds.node.save()
            services.decide_approval(personas["node_operator"], st, ds, "approved")
        with django_db_blocker.unblock(), start_worker(celery_app, pool="threads", concurrency=concurrency,
                                                       perform_ping_check=False, shutdown_timeout=30):
            yield {"fed": fed, "study": st}
