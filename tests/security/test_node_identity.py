"""A node's identity comes from its key, with a real SuperLink: approval registers the key and
keeps the id the SuperLink returns; revocation unregisters exactly that id (the node can no
longer connect); Flower never takes a retired key back, so re-approval asks for a new key, and
with it the node connects again."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def _status(fed, node_id: str) -> str:
    from fl_engine.deploy import control

    nodes = {n["node-id"]: n.get("status") for n in control.list_nodes(fed.address, **fed.conn_kwargs())}
    return nodes.get(node_id, "absent")


def test_revoke_unregisters_exactly_that_key_and_a_new_key_brings_the_node_back(tmp_path, settings, personas, orgs):
    from fl_engine.deploy.local import LocalFederation
    from fl_engine.deploy.pki import ensure_node_keys
    from fl_engine.deploy.processes import start_supernode, wait_until
    from portal.nodes import services
    from portal.nodes.models import WorkerNode
    from portal.studies import flower_adapter

    admin = personas["administrator"]
    with LocalFederation(tmp_path / "fed") as fed:
        settings.FLOWER_CONTROL_ADDRESS = fed.address
        settings.FLOWER_PKI_DIR = fed.pki.ca_cert.parent
        keys = {name: ensure_node_keys(tmp_path / name / "keys") for name in ("a", "b", "a2")}
        nodes = {}
        for name in ("a", "b"):
            nodes[name] = services.register_node(admin, orgs["hosp-a"], f"hosp-{name}", keys[name].public_text())
            services.approve_node(admin, nodes[name])
            flower_adapter.sync_node_key(nodes[name].pk)  # what approval's task does
            nodes[name].refresh_from_db()
            assert nodes[name].flower_node_id.isdigit()
        procs = []
        try:
            for name in ("a", "b"):
                procs.append(start_supernode(f"hosp-{name}", fed.address, fed.pki.ca_cert, keys[name].private_key,
                                             tmp_path / name / "data", tmp_path / name,
                                             node_options={"trust-all-runs": "true"}))
            wait_until(lambda: all(_status(fed, n.flower_node_id) == "online" for n in nodes.values()), 90,
                       "both nodes online")
            services.revoke_node(admin, nodes["a"], "test")
            flower_adapter.sync_node_key(nodes["a"].pk)
            old_id = nodes["a"].flower_node_id
            nodes["a"].refresh_from_db()
            assert nodes["a"].key_retired and nodes["a"].flower_node_id == ""
            assert _status(fed, old_id) in ("unregistered", "absent")
            assert _status(fed, nodes["b"].flower_node_id) == "online"  # exactly that key, not its neighbour
            with pytest.raises(services.NodeStateError, match="new key"):
                services.approve_node(admin, nodes["a"])
            # the operator generates a new key; approval registers it and the node connects with it
            services.replace_key(admin, nodes["a"], keys["a2"].public_text())
            services.approve_node(admin, WorkerNode.objects.get(pk=nodes["a"].pk))
            flower_adapter.sync_node_key(nodes["a"].pk)
            nodes["a"].refresh_from_db()
            assert nodes["a"].flower_node_id.isdigit() and nodes["a"].flower_node_id != old_id
            procs[0].stop()
            procs.append(start_supernode("hosp-a", fed.address, fed.pki.ca_cert, keys["a2"].private_key,
                                         tmp_path / "a" / "data", tmp_path / "a2",
                                         node_options={"trust-all-runs": "true"}))
            wait_until(lambda: _status(fed, nodes["a"].flower_node_id) == "online", 90, "the re-keyed node online")
        finally:
            for p in procs:
                p.stop()
