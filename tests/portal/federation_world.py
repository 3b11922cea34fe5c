"""A real federation behind the portal, shared by the real-process portal tests: a SuperLink and
one SuperNode per hospital (TLS + node authentication) holding parts of a generated MDS cohort,
the matching portal rows (approved nodes, announced datasets, a study every node approved) and a
real Celery worker (threads pool, in this process so that it sees the test database) on the
configured broker."""
from __future__ import annotations

import contextlib
import time


def wait_run(client, run_id: int, pred, timeout: float = 400) -> dict:
    """Poll GET /api/runs/<id>/ with `client` until `pred(body)`; AssertionError with the status
    and error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/runs/{run_id}/").json()
        if pred(body):
            return body
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not reach the expected state: {body.get('status')} {body.get('error')}")


@contextlib.contextmanager
def portal_federation(tmp_path, settings, live_server, personas, django_db_blocker, *, nodes, fractions,
                      n_patients: int, seed: int, study: dict, round_timeout_s: int, concurrency: int,
                      approve: tuple | None = None, extra_nodes: tuple = ()):
    """Yields {"fed", "study", "nodes": {name: WorkerNode}}; `study` holds the Study fields.

    Every node is a portal worker node with its own token and checks its approvals with the
    portal (as `fedhaem-node start` does). The study takes the datasets of `nodes`; `approve`
    names those whose operators approve it (default: all). `extra_nodes` are approved worker
    nodes of the federation outside the study (connected to the SuperLink, with data)."""
    from celery.contrib.testing.worker import start_worker

    from etl.registry import DatasetRegistry
    from fl_engine.cohort import generate_mds_cohort, split_nodes
    from fl_engine.deploy.local import LocalFederation
    from portal.accounts.models import Organisation
    from portal.celery import app as celery_app
    from fl_engine.deploy.pki import ensure_node_keys
    from portal.datasets.services import announce
    from portal.nodes import services as node_services
    from portal.nodes.models import WorkerNode
    from portal.studies import services
    from portal.studies.models import Study

    everyone = tuple(nodes) + tuple(extra_nodes)
    fr = tuple(fractions) + (fractions[-1],) * len(extra_nodes)
    parts = split_nodes(generate_mds_cohort(n=n_patients, seed=seed), tuple(f / sum(fr) for f in fr), seed=seed)
    with LocalFederation(tmp_path / "fed", events_key_file=settings.RUN_EVENTS_KEY_FILE) as fed:
        settings.FLOWER_CONTROL_ADDRESS = fed.address
        settings.FLOWER_PKI_DIR = fed.pki.ca_cert.parent
        settings.PORTAL_BASE_URL = live_server.url
        settings.ROUND_TIMEOUT_S = round_timeout_s
        admin = personas["administrator"]
        portal_nodes = {}
        for name, part in zip(everyone, parts):
            ndir = tmp_path / "fed" / "nodes" / name
            keys = ensure_node_keys(ndir / "keys")
            org, _ = Organisation.objects.get_or_create(code=name, defaults={"name": name})
            node = node_services.register_node(admin, org, name, keys.public_text())
            token_file = ndir / "token"
            token_file.write_text(node_services.approve_node(admin, node))
            fed.add_node(name, part.reset_index(drop=True), dataset="mds",
                         node_options={"manager": live_server.url, "token-file": str(token_file),
                                       "approval-cache-s": "1"})
            # the identity the SuperLink gave the key, as sync_node_key stores it
            WorkerNode.objects.filter(pk=node.pk).update(flower_node_id=fed.node_ids[name])
            portal_nodes[name] = WorkerNode.objects.get(pk=node.pk)
        fed.wait_nodes_online()
        datasets = []
        for name in everyone:
            entry = DatasetRegistry(tmp_path / "fed" / "nodes" / name / "data").get("mds")
            ds = announce(portal_nodes[name], None, entry.announcement())[0]
            if name in nodes:
                datasets.append(ds)
        st = Study(use_case="MDS", owner=personas["coordinator"], **study)
        st.full_clean()
        st.save()
        st.datasets.set(datasets)
        for ds in datasets:
            ds.node.organisation = personas["node_operator"].organisation
            ds.node.save()
            if approve is None or ds.node.name in approve:
                services.decide_approval(personas["node_operator"], st, ds, "approved")
        celery_app.control.purge()  # tasks an earlier test queued for rows that no longer exist
        with django_db_blocker.unblock(), start_worker(celery_app, pool="threads", concurrency=concurrency,
                                                       queues=["celery", settings.CONCLUSIONS_QUEUE, settings.GRIDS_QUEUE],
                                                       perform_ping_check=False, shutdown_timeout=30):
            yield {"fed": fed, "study": st, "nodes": portal_nodes}
