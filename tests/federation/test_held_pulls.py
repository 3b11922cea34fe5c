"""Held Fleet pulls (fl_engine.deploy.flower_tuning): an idle node's PullMessages waits at the
SuperLink until a message for it is stored, so idle nodes cost the SuperLink one request per
hold instead of one per idle poll, and a new run's first message reaches them at once.

The Doorbell is tested alone; the rest runs real Flower processes (SuperLink with TLS and node
authentication, SuperNodes, prefork launchers) and reads what the SuperLink served from its own
access log.
"""
from __future__ import annotations

import signal
import threading
import time

import pytest

from fl_engine.deploy import control, flower_tuning
from fl_engine.deploy.local import APP_DIR, LocalFederation
from fl_engine.cohort import generate_mds_cohort, split_nodes


def test_doorbell_wakes_the_waiter_of_its_key_only():
    bell = flower_tuning.Doorbell()
    woke: dict = {}

    def waiter(key):
        t = time.monotonic()
        assert bell.wait(key, bell.rung(key), 5.0)
        woke[key] = time.monotonic() - t

    threads = [threading.Thread(target=waiter, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    bell.ring(1)
    threads[0].join(2)
    assert not threads[0].is_alive() and woke[1] < 1.0
    assert threads[1].is_alive()  # node 2's bell was not rung
    bell.close()  # shutting down wakes every waiter
    threads[1].join(2)
    assert not threads[1].is_alive() and woke[2] < 2.0
    assert bell.held == 0


def test_doorbell_times_out_counts_rings_before_the_wait_and_caps_waiters():
    bell = flower_tuning.Doorbell(max_held=1)
    seen = bell.rung(7)
    bell.ring(7)  # rung between the pull that found nothing and the wait: no wait at all
    t = time.monotonic()
    assert bell.wait(7, seen, 5.0)
    assert time.monotonic() - t < 0.5
    t = time.monotonic()
    assert bell.wait(7, bell.rung(7), 0.3)  # nothing comes: back after the hold
    assert 0.25 < time.monotonic() - t < 2.0

    blocker = threading.Thread(target=bell.wait, args=(8, bell.rung(8), 5.0))
    blocker.start()
    time.sleep(0.1)
    assert bell.held == 1
    assert bell.wait(9, bell.rung(9), 5.0) is False  # beyond max_held: answered at once
    bell.ring(8)
    blocker.join(2)
    assert bell.held == 0


def test_doorbell_forgets_the_oldest_keys_beyond_max_keys():
    bell = flower_tuning.Doorbell(max_keys=2)
    for key in ("a", "b", "c"):
        bell.ring(key)
    assert (bell.rung("a"), bell.rung("b"), bell.rung("c")) == (0, 1, 1)
    # a waiter of a forgotten key is not left waiting for a ring it already missed
    t = time.monotonic()
    assert bell.wait("a", 1, 5.0)
    assert time.monotonic() - t < 0.5


@pytest.fixture
def object_hold(monkeypatch):
    """apply_object_hold on this process's Flower modules, put back after the test."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers
    import uvicorn.server
    for owner, name in ((InMemoryLinkState, "store_object"), (SqlLinkState, "store_object"),
                        (fleet_handlers, "pull_object"), (runtime_handlers, "pull_object"),
                        (uvicorn.server.Server, "handle_exit")):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    monkeypatch.setattr(flower_tuning, "_SERVER_BELLS", [])
    return lambda hold_s: flower_tuning.apply_object_hold(hold_s)


def _pull_in_server_thread(state, run_id: int, object_id: str, out: dict) -> None:
    """The Runtime API's PullObject as the SuperLink serves it: in an anyio worker thread."""
    import anyio
    import anyio.to_thread
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
    from flwr.proto.message_pb2 import PullObjectRequest  # pylint: disable=E0611
    from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
    from flwr.superlink.servicer.runtime import runtime_handlers

    request = PullObjectRequest(node=Node(node_id=SUPERLINK_NODE_ID), run_id=run_id, object_id=object_id)
    t = time.monotonic()
    out["response"] = anyio.run(anyio.to_thread.run_sync, lambda: runtime_handlers.pull_object(
        request, state, Task(run_id=run_id)))
    out["took"] = time.monotonic() - t


def test_an_object_pull_is_held_until_the_object_is_pushed(object_hold):
    """Flower's own LinkState and Runtime handler: a pull for an object announced but not pushed
    is answered once it is stored (not after a client back-off); one never pushed gets Flower's
    "not available" after the hold; with the hold off, at once."""
    from flwr.app import ConfigRecord
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.inflatable.inflatable_object import get_object_tree
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager

    def announced(state, value: int):
        record = ConfigRecord({"round": value})
        session = state.start_session(run_id)
        assert state.preregister_object_tree(get_object_tree(record), session) == [record.object_id]
        return record, session

    run_id = 42
    state = InMemoryLinkState(NoOpFederationManager(), ObjectStoreFactory().store())
    # stock Flower: "found, not available" at once
    record, _ = announced(state, 0)
    out: dict = {}
    _pull_in_server_thread(state, run_id, record.object_id, out)
    assert out["response"].object_found and not out["response"].object_available and out["took"] < 0.5

    bell = object_hold(3.0)
    record, session = announced(state, 1)
    out = {}
    puller = threading.Thread(target=_pull_in_server_thread, args=(state, run_id, record.object_id, out))
    puller.start()
    time.sleep(0.5)
    assert puller.is_alive() and bell.held == 1  # held at the SuperLink
    assert state.store_object(run_id, session, record.object_id, record.deflate())
    puller.join(5)
    assert out["response"].object_available and out["response"].object_content == record.deflate()
    assert 0.4 < out["took"] < 2.0, out["took"]

    record, _ = announced(state, 2)  # never pushed
    out = {}
    _pull_in_server_thread(state, run_id, record.object_id, out)
    assert out["response"].object_found and not out["response"].object_available
    assert 2.9 < out["took"] < 6.0, out["took"]
    assert bell.held == 0


def test_hold_setting_is_checked(monkeypatch):
    monkeypatch.setenv(flower_tuning.PULL_HOLD_ENV, "0")
    assert flower_tuning.pull_hold_s() == 0
    for bad in ("-1", "26", "soon"):
        monkeypatch.setenv(flower_tuning.PULL_HOLD_ENV, bad)
        with pytest.raises(RuntimeError, match=flower_tuning.PULL_HOLD_ENV):
            flower_tuning.pull_hold_s()


def test_idle_nodes_are_held_and_a_run_still_reaches_them_at_once(tmp_path, monkeypatch):
    # holds longer than ManagedProcess.stop's 10 s SIGTERM grace: only a SuperLink that wakes its
    # held pulls on SIGTERM stops without being killed
    monkeypatch.setenv(flower_tuning.PULL_HOLD_ENV, "12")
    monkeypatch.setenv(flower_tuning.TASK_HOLD_ENV, "12")
    cohort = generate_mds_cohort(240, seed=3)
    cohort = cohort[cohort["age"].notna()].reset_index(drop=True)
    tables = split_nodes(cohort, (0.5, 0.5), seed=0)
    with LocalFederation(tmp_path / "fed", tuning=True, serverapp_launcher="prefork") as fed:
        for i, table in enumerate(tables):
            fed.add_node(f"H{i + 1}", table, dataset="held")
        fed.wait_nodes_online(120)
        # Each process says, once, that its requests are held (an empty answer that took the
        # hold): the SuperNodes' Fleet pulls, their ClientApp launchers' and the ServerApp
        # launcher's AcquireTask. Without the holds these lines never appear.
        wanted = [(h.process, "holds this node's idle pulls") for h in fed.nodes.values()]
        wanted += [(h.launcher, "holds AcquireTask until a task comes") for h in fed.nodes.values()]
        wanted.append((fed.superlink.process, "holds AcquireTask until a run comes"))

        def missing() -> list:
            return [(p.name, line) for p, line in wanted if line not in p.log_text()]
        deadline = time.monotonic() + 60
        while missing() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not missing(), missing()
        # Fleet requests still pass node authentication (the tuned SuperLink runs Flower's
        # Fleet-only middlewares for Fleet paths only): an unsigned pull for a real node is refused
        _assert_unsigned_pull_refused(fed)

        run_id = control.start_run(APP_DIR, {
            "dataset": "held", "num_rounds": 2, "min_nodes": 2, "local_epochs": 1,
            "poll_interval_s": 0.1, "round_timeout_s": 300.0, "fuse_evaluation": True,
            "comparison": False}, fed.address, **fed.conn_kwargs())
        status = fed.wait_run(run_id, 300, poll_s=0.5)
        assert status["status"] == "finished:completed", status
        # the nodes took every message while their pulls were held: no node logged a pull that
        # failed or timed out
        for h in fed.nodes.values():
            log = h.process.log_text()
            assert "ReadTimeout" not in log and "Traceback" not in log, log[-2000:]

        # a SuperLink holding pulls (the nodes are waiting for the next message) and AcquireTask
        # stops when asked: SIGTERM wakes them, no SIGKILL after the grace period
        time.sleep(1.0)
        t = time.monotonic()
        code = fed.superlink.process.stop()
        assert code != -signal.SIGKILL and time.monotonic() - t < 9.0, (code, time.monotonic() - t)
        assert "Traceback" not in fed.superlink.process.log_text()[-4000:]


def test_a_tuned_supernode_pulls_again_at_once_after_a_held_pull_only(monkeypatch):
    from flwr.supernode import start_client_internal as sci
    saved = sci._pull_and_store_message, sci.time
    monkeypatch.setattr(flower_tuning, "HELD_PULL_S", 0.2)
    monkeypatch.setenv(flower_tuning.IDLE_POLL_ENV, "2")
    real_sleep = time.sleep
    took = []

    def fake_pull(**kwargs):  # stands in for Flower's pull only to drive the real wrapper
        real_sleep(took.pop(0))
        return None

    sci._pull_and_store_message = fake_pull
    try:
        flower_tuning.apply_supernode_sleeps()
        slept = []
        monkeypatch.setattr(flower_tuning._time, "sleep", lambda s: slept.append(s))
        took[:] = [0.3, 0.0]
        assert sci._pull_and_store_message() is None  # empty after 0.3 s: the SuperLink held it
        sci.time.sleep(3)
        assert sci._pull_and_store_message() is None  # empty at once: a stock SuperLink
        sci.time.sleep(3)
        assert slept == [flower_tuning.SUPERNODE_SLEEPS[3], 2.0]
    finally:
        sci._pull_and_store_message, sci.time = saved


def _assert_unsigned_pull_refused(fed) -> None:
    import httpx
    from flwr.proto.fleet_pb2 import PullMessagesRequest  # pylint: disable=E0611
    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supernode.fleet_http_client import FleetHttpClient

    client = FleetHttpClient.from_server_address(
        server_address=fed.address, insecure=False, root_certificates=fed.pki.ca_cert.read_bytes(),
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperNode")])
    node_id = next(iter(fed.node_ids.values()))
    try:
        with pytest.raises(httpx.HTTPStatusError) as err:
            client.PullMessages(PullMessagesRequest(node=Node(node_id=int(node_id))))
        assert err.value.response.status_code == 401
    finally:
        client.close()
