"""The Flower tuning bounds how long a pull waits for message objects that never arrive.

A run cancelled while its message's objects were pushed leaves them preregistered but never
available; an unbounded pull held a SuperNode's single main loop for minutes (bench/faults.py).
These tests call flwr's own pull functions with the defaults the tuning installs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from flwr.supercore.inflatable import inflatable_utils as iu

from fl_engine.deploy import flower_tuning


@pytest.fixture
def restore_pull_defaults():
    saved = {fn: dict(fn.__kwdefaults__) for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree)}
    yield
    for fn, kw in saved.items():
        fn.__kwdefaults__ = kw


def _never_available(object_id: str) -> bytes:
    raise iu.ObjectUnavailableError(object_id)


def test_stock_flower_waits_for_hours(restore_pull_defaults):
    assert iu.pull_objects.__kwdefaults__["max_time"] >= 3600


def test_tuned_pull_gives_up_after_its_bound(restore_pull_defaults, monkeypatch):
    monkeypatch.setenv(flower_tuning.PULL_MAX_ENV, "1.5")
    flower_tuning.apply_pull_backoff()
    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        assert fn.__kwdefaults__["max_time"] == 1.5
        assert fn.__kwdefaults__["backoff_cap"] == flower_tuning.BACKOFF_CAP_S
    t0 = time.monotonic()
    with pytest.raises(iu.ObjectPullError, match="timeout or retry limit"):
        iu.pull_objects(["a" * 64], _never_available)
    waited = time.monotonic() - t0
    assert 1.5 <= waited < 30, waited


def test_tuned_pull_still_returns_objects_that_arrive(restore_pull_defaults, monkeypatch):
    monkeypatch.setenv(flower_tuning.PULL_MAX_ENV, "20")
    flower_tuning.apply_pull_backoff()
    calls = {"n": 0}

    def arrives_on_third_try(object_id: str) -> bytes:
        calls["n"] += 1
        if calls["n"] < 3:
            raise iu.ObjectUnavailableError(object_id)
        return b"payload"

    assert iu.pull_objects(["b" * 64], arrives_on_third_try) == {"b" * 64: b"payload"}
    assert calls["n"] == 3


def test_default_bound_and_bad_values(monkeypatch):
    monkeypatch.delenv(flower_tuning.PULL_MAX_ENV, raising=False)
    assert flower_tuning.pull_max_s() == flower_tuning.PULL_MAX_S
    for bad in ("soon", "0", "100000"):
        monkeypatch.setenv(flower_tuning.PULL_MAX_ENV, bad)
        with pytest.raises(RuntimeError, match=flower_tuning.PULL_MAX_ENV):
            flower_tuning.pull_max_s()


def test_activity_polls_fast_only_within_its_window():
    a = flower_tuning.Activity(0.1, 2.0, window_s=0.3)
    assert a.poll_s() == 2.0  # never busy yet
    a.mark()
    assert a.poll_s() == 0.1
    time.sleep(0.35)
    assert a.poll_s() == 2.0
    assert flower_tuning.Activity(0.5, 0.1).poll_s() == 0.5  # idle never polls faster than busy


def test_supernode_loop_slows_down_when_idle_and_speeds_up_on_a_message(monkeypatch):
    from flwr.supernode import start_client_internal as sci
    saved = sci._pull_and_store_message, sci.time
    monkeypatch.setenv(flower_tuning.IDLE_POLL_ENV, "0.4")
    pulled = []

    def fake_pull(**kwargs):  # stands in for Flower's pull only to drive the real wrapper
        return pulled.pop(0) if pulled else None

    sci._pull_and_store_message = fake_pull
    try:
        activity = flower_tuning.apply_supernode_sleeps()
        slept = []
        real_sleep = time.sleep
        monkeypatch.setattr(flower_tuning._time, "sleep", lambda s: slept.append(s))
        assert sci._pull_and_store_message() is None
        sci.time.sleep(3)  # the loop's wait after an empty pull
        sci.time.sleep(0.5)  # the wait for a ClientApp reply
        pulled.append(12345)
        assert sci._pull_and_store_message() == 12345
        sci.time.sleep(3)
        monkeypatch.setattr(flower_tuning._time, "sleep", real_sleep)
        assert slept == [0.4, flower_tuning.SUPERNODE_SLEEPS[0.5], flower_tuning.SUPERNODE_SLEEPS[3]]
        assert activity.last > 0
    finally:
        sci._pull_and_store_message, sci.time = saved


@pytest.mark.parametrize("apply", ["apply_pull_backoff", "apply_supernode_sleeps", "apply_superlink_pull_hold",
                                   "apply_object_hold",
                                   "apply_task_hold", "apply_server_keepalive", "apply_client_keepalive",
                                   "apply_scoped_middleware", "apply_quiet_telemetry"])
def test_every_patch_refuses_another_flower_version(apply, monkeypatch):
    """The patches are written against flwr 1.42's internals: on any other version each one
    refuses loudly before it touches anything, rather than guess."""
    import flwr
    monkeypatch.setattr(flwr, "__version__", "1.43.0", raising=False)
    with pytest.raises(RuntimeError, match=r"written for flwr 1\.42, found 1\.43\.0"):
        getattr(flower_tuning, apply)()


def test_scoped_middleware_runs_each_of_flowers_layers_only_on_its_own_api(monkeypatch):
    """The tuned SuperLink's stack: the same layers in the same order; the Control-only ones run
    for /v1/control/ paths only, the Fleet-only ones for /v1/fleet/ only (event logs only with
    their plugin); error and protobuf translation stay on every request."""
    import asyncio

    from flwr.superlink import main as superlink_main
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware
    monkeypatch.setattr(superlink_main, "_get_middleware", superlink_main._get_middleware)
    stock = superlink_main._get_middleware()
    flower_tuning.apply_scoped_middleware()
    tuned = superlink_main._get_middleware()
    assert len(tuned) == len(stock) == 8
    inner = [m.kwargs["middleware"] if m.cls is flower_tuning.PathScoped else m.cls for m in tuned]
    assert inner == [m.cls for m in stock]  # same layers, same order
    scoped = {m.kwargs["middleware"].__name__: m.kwargs["prefix"] for m in tuned if m.cls is flower_tuning.PathScoped}
    assert scoped == {"ControlSensitiveResponseMiddleware": "/v1/control/", "ControlAuthenticationMiddleware": "/v1/control/",
                      "ControlLicenseMiddleware": "/v1/control/", "ControlEventLogMiddleware": "/v1/control/",
                      "NodeAuthMiddleware": "/v1/fleet/", "FleetEventLogMiddleware": "/v1/fleet/"}
    flower_tuning.apply_scoped_middleware()  # applying twice wraps nothing twice
    assert [m.cls for m in superlink_main._get_middleware()] == [m.cls for m in tuned]

    # PathScoped itself: the wrapped middleware sees only its prefix (and, with plugin_state,
    # only while the app has that plugin)
    seen = []

    class Recorder:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            seen.append(scope["path"])
            await self.app(scope, receive, send)

    async def endpoint(scope, receive, send):
        seen.append("endpoint")

    class App:
        class state:
            plugin = None
    layer = flower_tuning.PathScoped(endpoint, middleware=Recorder, prefix="/v1/fleet/")
    logged = flower_tuning.PathScoped(endpoint, middleware=Recorder, prefix="/v1/fleet/", plugin_state="plugin")
    for path in ("/v1/fleet/pull-messages", "/v1/control/list-runs", "/v1/runtime/acquire-task"):
        asyncio.run(layer({"type": "http", "path": path, "app": App}, None, None))
        asyncio.run(logged({"type": "http", "path": path, "app": App}, None, None))
    assert seen == ["/v1/fleet/pull-messages", "endpoint", "endpoint"] + ["endpoint"] * 4
    App.state.plugin = object()
    seen.clear()
    asyncio.run(logged({"type": "http", "path": "/v1/fleet/x", "app": App}, None, None))
    assert seen == ["/v1/fleet/x", "endpoint"]
    assert NodeAuthMiddleware in inner


def test_scoped_middleware_can_be_switched_off(monkeypatch):
    from flwr.superlink import main as superlink_main
    monkeypatch.setattr(superlink_main, "_get_middleware", superlink_main._get_middleware)
    monkeypatch.setenv(flower_tuning.SCOPED_MIDDLEWARE_ENV, "0")
    flower_tuning.apply_scoped_middleware()
    assert all(m.cls is not flower_tuning.PathScoped for m in superlink_main._get_middleware())


def test_quiet_telemetry_answers_at_once_without_building_flowers_payload():
    """Flower builds its telemetry payload (two subprocesses: `file`, `uname -p`) even when
    telemetry is off; tuned, an event is answered "disabled" without it. With telemetry on, the
    tuning leaves Flower's code in place. In fresh interpreters: Flower reads the switch at import."""
    code = """
import json, platform
from fl_engine.deploy import flower_tuning
from flwr.supercore import telemetry
calls = []
platform.architecture = lambda *a, **k: calls.append("architecture") or ("64bit", "ELF")
flower_tuning.apply_quiet_telemetry()
res = telemetry.event(telemetry.EventType.FLWR_CLIENTAPP_RUN_ENTER).result(timeout=30)
print(json.dumps({"result": res, "calls": calls}))
"""
    for enabled, want_calls in (("0", []), ("1", ["architecture"])):
        env = {**os.environ, "FLWR_TELEMETRY_ENABLED": enabled, "FLWR_TELEMETRY_LOGGING": "0"}
        if enabled == "1":  # nothing may leave this machine in a test: an unroutable address fails at once
            code_run = code.replace("flower_tuning.apply_quiet_telemetry()",
                                    "flower_tuning.apply_quiet_telemetry(); "
                                    "telemetry.TELEMETRY_EVENTS_URL = 'http://127.0.0.1:9/'")
        else:
            code_run = code
        out = subprocess.run([sys.executable, "-c", code_run], env=env, text=True, capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["calls"] == want_calls, (enabled, got)
        if enabled == "0":
            assert got["result"] == "disabled"
