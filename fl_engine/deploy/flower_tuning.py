"""Last-resort tuning of Flower 1.42's fixed waits (the ONE place FedHaem changes Flower's
behaviour at runtime). Off by default; switched on per process by FEDHAEM_FLOWER_TUNING=1
(`start_supernode(..., tuning=True)`, `start_superlink(..., tuning=True)`).

What it changes, and why (measured in /work/shared/notes/flower-round-latency.md):
- SuperNode: ``time.sleep(3)`` after an empty pull -> 0.1 s, ``time.sleep(0.5)`` while waiting
  for the ClientApp's reply -> 0.05 s (flwr/supernode/start_client_internal.py). Done by giving
  that module a `time` whose `sleep` maps those two durations; nothing else is touched.
- ClientApp and ServerApp: the initial back-off when message objects are pulled before they are
  there, 1 s doubling up to 10 s -> 0.05 s doubling up to 1 s (keyword defaults of
  flwr.supercore.inflatable.inflatable_utils.pull_objects / pull_and_inflate_object_from_tree;
  the constants are bound at definition time, so the defaults themselves are replaced).
- The same two functions: how long a pull may wait for objects that never come, 7,200 s and 500
  tries -> PULL_MAX_S (60 s; FEDHAEM_FLOWER_PULL_MAX_S). A message whose run was cancelled while
  its objects were being pushed leaves them "preregistered, not available" at the SuperLink; the
  SuperNode pulls a message's objects in its one main loop, so with the shortened back-off it
  retried for ~8.5 min (500 tries x 1 s) and every other run's messages waited behind it
  (measured in bench/faults.py's load case). Our messages are a few MB at most; 60 s is ample.
- Idle is nearly free: the SuperNode's 0.1 s pull loop runs only while the node is busy, that is
  within ACTIVE_WINDOW_S (30 s) of the last message it received; an idle node pulls every
  IDLE_POLL_S (2 s; FEDHAEM_FLOWER_IDLE_POLL_S), still faster than stock Flower's 3 s. A run's
  rounds follow each other within seconds, so a running federation stays on the fast path; the
  first message of a new run waits at most one idle poll. Done by wrapping the loop's
  `_pull_and_store_message` (module attribute) to note when it returned a message. The prefork
  launcher polls its SuperNode the same way (fl_engine.deploy.prefork).
- Held pulls (long-poll), SuperLink side: Flower 1.42's Fleet API has no push, and every idle
  pull costs the SuperLink ~4.5 ms of CPU (bench/README.md section 8), so 20 nodes polling every
  2 s kept it at 5-6% of a core. With `python -m fl_engine.deploy.flower_tuning superlink`, a
  PullMessages that finds nothing for its node is held up to PULL_HOLD_S (20 s;
  FEDHAEM_FLOWER_PULL_HOLD_S, 0 = off) and answered as soon as a message for that node is stored
  (the LinkState's `store_message_and_object_tree` rings that node's Doorbell): an idle node
  costs one request per 20 s, and a new run's first message reaches it at once instead of after
  an idle poll. Held pulls wait in the server's worker threads, so the thread limit is raised
  by the number of pulls that may be held (HELD_MAX; beyond it a pull is answered at once as
  before), and a SIGTERM/SIGINT wakes every held pull so the SuperLink stops without waiting.
  A stock SuperNode is served the same (its pull timeout is 30 s); a tuned SuperNode notices
  that an empty pull was held (it took over HELD_PULL_S) and pulls again right away.
- Held object pulls, SuperLink: a PullObject (Fleet or Runtime API) for an object announced but
  not pushed yet is held up to OBJECT_HOLD_S (10 s; FEDHAEM_FLOWER_OBJECT_HOLD_S, 0 = off) and
  answered once the object is stored (`store_object` rings that object's bell), instead of
  every node asking again every 0.05-1 s while the ServerApp pushes to the others.
- Held AcquireTask, SuperLink and SuperNode: the launchers that start ServerApps and ClientApps
  ask the Runtime API for a pending task in a loop; an empty AcquireTask is held up to
  TASK_HOLD_S (5 s; FEDHAEM_FLOWER_TASK_HOLD_S, 0 = off) and answered when work comes: the
  SuperLink's `create_run` (a run's ServerApp task), the SuperNode's `store_message` of an
  incoming message (stored just after its task is created). FedHaem's prefork launchers ask
  again at once after a held answer; a stock flower-superexec just waits longer.
- Scoped middleware, SuperLink: Flower's FastAPI app runs eight Starlette BaseHTTPMiddleware
  layers on every request, six of which act on one API only (Control authentication, licence,
  no-cache headers and event log; Fleet node authentication and event log). The tuned SuperLink
  runs each of those six only on its own API's paths (PathScoped, pure ASGI), so an idle node's
  held pulls and heartbeats pass four layers instead of eight
  (FEDHAEM_FLOWER_SCOPED_MIDDLEWARE=0 keeps Flower's stack).
- Quiet telemetry, every process: with Flower's telemetry switched off (FLWR_TELEMETRY_ENABLED=0,
  Flower's own option, FedHaem's default) its events are answered at once instead of first
  building a payload that runs two subprocesses (`file`, `uname -p`) in every ClientApp and
  ServerApp (apply_quiet_telemetry).
Pinned to flwr 1.42: `apply()` refuses another version rather than guess.

    python -m fl_engine.deploy.flower_tuning supernode <flower-supernode arguments>
    python -m fl_engine.deploy.flower_tuning superlink <flower-superlink arguments>
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time as _time
import types

ENV = "FEDHAEM_FLOWER_TUNING"
# set by processes.start_supernode(claims_in_node=True): JSON {address, zygote, poll_interval_s,
# idle_poll_s}; the SuperNode claims its tasks itself (fl_engine.deploy.prefork.serve_in_supernode)
NODE_CLAIMS_ENV = "FEDHAEM_NODE_CLAIMS"
SUPERNODE_SLEEPS = {3: 0.1, 0.5: 0.05}
INITIAL_BACKOFF_S = 0.05
BACKOFF_CAP_S = 1.0
ACTIVE_WINDOW_S = 30.0
IDLE_POLL_ENV = "FEDHAEM_FLOWER_IDLE_POLL_S"
IDLE_POLL_S = 2.0
PULL_MAX_ENV = "FEDHAEM_FLOWER_PULL_MAX_S"
PULL_MAX_S = 60.0
PULL_HOLD_ENV = "FEDHAEM_FLOWER_PULL_HOLD_S"
PULL_HOLD_S = 20.0  # under the 30 s HTTP timeout of Flower's Fleet client
PULL_HOLD_MAX_S = 25.0
TASK_HOLD_ENV = "FEDHAEM_FLOWER_TASK_HOLD_S"
TASK_HOLD_S = 5.0  # a launcher also reaps children and watches its parent between polls
HELD_MAX = 512
HELD_PULL_S = 1.0
OBJECT_HOLD_ENV = "FEDHAEM_FLOWER_OBJECT_HOLD_S"
OBJECT_HOLD_S = 10.0
OBJECT_HELD_MAX = 256
OBJECT_KEYS_MAX = 65536  # object ids whose pushes are remembered (oldest forgotten first)
_SERVER_BELLS: list = []  # the bells whose held requests wait in this server's worker threads


def _seconds(env: str, default: float, lo: float, hi: float) -> float:
    raw = os.environ.get(env, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise RuntimeError(f"{env}={raw!r} is not a number of seconds") from None
    if not lo <= value <= hi:
        raise RuntimeError(f"{env}={raw!r} must lie between {lo:g} and {hi:g} seconds")
    return value


def pull_max_s() -> float:
    return _seconds(PULL_MAX_ENV, PULL_MAX_S, 1, 7200)


def idle_poll_s() -> float:
    return _seconds(IDLE_POLL_ENV, IDLE_POLL_S, 0.05, 60)


def pull_hold_s() -> float:
    return _seconds(PULL_HOLD_ENV, PULL_HOLD_S, 0, PULL_HOLD_MAX_S)


def task_hold_s() -> float:
    return _seconds(TASK_HOLD_ENV, TASK_HOLD_S, 0, PULL_HOLD_MAX_S)


def object_hold_s() -> float:
    return _seconds(OBJECT_HOLD_ENV, OBJECT_HOLD_S, 0, PULL_HOLD_MAX_S)


class Activity:
    """When this process last had work: poll fast within `window_s` of it, slowly otherwise."""

    def __init__(self, fast_s: float, idle_s: float, window_s: float = ACTIVE_WINDOW_S):
        self.fast_s, self.idle_s, self.window_s = fast_s, idle_s, window_s
        self.last = -float("inf")
        self.held = False  # the last empty pull was held by the server: it will answer when work comes
        self.seen_held = False

    def mark(self) -> None:
        self.last = _time.monotonic()

    def poll_s(self) -> float:
        if self.held or _time.monotonic() - self.last < self.window_s:
            return self.fast_s
        return max(self.fast_s, self.idle_s)


class Doorbell:
    """Wake-ups for held requests, one bell per key (a node id): `wait(key, seen, timeout)` returns
    once `key` has been rung since `rung(key)` returned `seen`, the bell is closed, or `timeout`
    has passed. At most `max_held` waits at a time: `wait` returns False at once beyond that.
    With `max_keys`, only that many keys' rings are remembered, the oldest forgotten first (a
    waiter of a forgotten key wakes early or at its timeout, and asks again either way)."""

    def __init__(self, max_held: int = HELD_MAX, max_keys: int | None = None):
        self.max_held = max_held
        self.max_keys = max_keys
        self.closed = False
        self.held = 0
        self._lock = threading.Lock()
        self._rings: dict = {}
        self._conds: dict = {}  # key -> [Condition, waiters]

    def rung(self, key) -> int:
        with self._lock:
            return self._rings.get(key, 0)

    def ring(self, key) -> None:
        with self._lock:
            self._rings[key] = self._rings.get(key, 0) + 1
            if self.max_keys is not None and len(self._rings) > self.max_keys:
                del self._rings[next(iter(self._rings))]
            entry = self._conds.get(key)
            if entry:
                entry[0].notify_all()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for cond, _ in self._conds.values():
                cond.notify_all()

    def wait(self, key, seen: int, timeout: float) -> bool:
        deadline = _time.monotonic() + timeout
        with self._lock:
            if self.closed or self.held >= self.max_held:
                return False
            entry = self._conds.setdefault(key, [threading.Condition(self._lock), 0])
            entry[1] += 1
            self.held += 1
            try:
                while not self.closed and self._rings.get(key, 0) == seen:
                    left = deadline - _time.monotonic()
                    if left <= 0:
                        break
                    entry[0].wait(left)
            finally:
                self.held -= 1
                entry[1] -= 1
                if entry[1] == 0:
                    del self._conds[key]
        return True


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def _check_version() -> None:
    import flwr
    version = getattr(flwr, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v
        version = _v("flwr")
    if not str(version).startswith("1.42."):
        raise RuntimeError(f"fl_engine.deploy.flower_tuning is written for flwr 1.42, found {version}")


def apply_pull_backoff() -> None:
    """Shorter initial back-off, and a bounded wait, when pulling message objects (SuperNode,
    ClientApp, ServerApp)."""
    _check_version()
    from flwr.supercore.inflatable import inflatable_utils as iu
    limit = pull_max_s()
    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        kw = dict(fn.__kwdefaults__ or {})
        if not {"initial_backoff", "backoff_cap", "max_time", "max_tries_per_object"} <= set(kw):
            raise RuntimeError(f"{fn.__qualname__} lacks the pull keyword defaults this tuning sets")
        kw["initial_backoff"] = INITIAL_BACKOFF_S
        kw["backoff_cap"] = BACKOFF_CAP_S
        kw["max_time"] = limit
        fn.__kwdefaults__ = kw


def apply_supernode_sleeps() -> Activity:
    """Shorter reply waits in the SuperNode's main loop; after an empty pull, a short wait while
    the node is busy and IDLE_POLL_S once it has been idle for ACTIVE_WINDOW_S."""
    _check_version()
    from flwr.common.logger import log as flwr_log
    from flwr.supernode import start_client_internal as sci
    activity = Activity(SUPERNODE_SLEEPS[3], idle_poll_s())
    pull_and_store = sci._pull_and_store_message
    if not callable(pull_and_store):
        raise RuntimeError("flwr.supernode.start_client_internal has no _pull_and_store_message")

    def pull_and_store_noting_activity(*args, **kwargs):
        started = _time.monotonic()
        run_id = pull_and_store(*args, **kwargs)
        if run_id is not None:
            activity.mark()
        # an empty pull that took this long was held by a SuperLink that answers when work comes
        held = run_id is None and held_answer(started)
        if held and not activity.seen_held:
            activity.seen_held = True
            flwr_log(logging.INFO, "The SuperLink holds this node's idle pulls until a message comes "
                     "(FedHaem tuning): no idle polling")
        activity.held = held
        return run_id

    def sleep(seconds: float) -> None:
        _time.sleep(activity.poll_s() if seconds == 3 else SUPERNODE_SLEEPS.get(seconds, seconds))

    shim = types.ModuleType("time")
    shim.__dict__.update({k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    shim.sleep = sleep
    sci.time = shim
    sci._pull_and_store_message = pull_and_store_noting_activity
    return activity


def _raise_thread_limit(total: int) -> None:
    """From a worker thread of the server's event loop: let it run at least `total` threads."""
    import anyio.from_thread
    import anyio.to_thread

    def _raise() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        if limiter.total_tokens < total:
            limiter.total_tokens = total

    anyio.from_thread.run_sync(_raise)


def _hold_in_server_threads(bell: Doorbell) -> None:
    """Count `bell`'s held requests in the server's worker threads (see _wait_threads)."""
    _SERVER_BELLS.append(bell)


def _wait_threads() -> None:
    """From a request about to be held: let the server run a thread for every request that may be
    held at once, plus 40 for the rest (anyio's default)."""
    _raise_thread_limit(40 + sum(b.max_held for b in _SERVER_BELLS))


def apply_superlink_pull_hold(hold_s: float | None = None) -> Doorbell | None:
    """Hold empty Fleet pulls until a message for the node is stored (see the module's doc)."""
    _check_version()
    hold = pull_hold_s() if hold_s is None else hold_s
    if hold <= 0:
        return None
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.superlink.servicer.fleet import fleet_handlers

    bell = Doorbell()
    for cls in (InMemoryLinkState, SqlLinkState):
        store = cls.store_message_and_object_tree

        def store_and_ring(self, message, object_tree, session_id, _store=store):
            result = _store(self, message, object_tree, session_id)
            meta = message.metadata
            if result[0] and not meta.reply_to_message_id and meta.dst_node_id != SUPERLINK_NODE_ID:
                bell.ring(meta.dst_node_id)
            return result

        cls.store_message_and_object_tree = store_and_ring

    pull = fleet_handlers.pull_messages
    threads_raised: list = []
    _hold_in_server_threads(bell)

    def pull_messages_held(request, state, store):
        node_id = request.node.node_id
        seen = bell.rung(node_id)
        response = pull(request=request, state=state, store=store)
        if len(response.messages_list) or bell.closed:
            return response
        if not threads_raised:
            _wait_threads()
            threads_raised.append(True)
        if bell.wait(node_id, seen, hold):
            return pull(request=request, state=state, store=store)
        return response

    fleet_handlers.pull_messages = pull_messages_held
    _close_on_exit(bell)
    return bell


def apply_object_hold(hold_s: float | None = None) -> Doorbell | None:
    """Hold a PullObject whose object is announced but not pushed yet until it is stored, up to
    OBJECT_HOLD_S (10 s; FEDHAEM_FLOWER_OBJECT_HOLD_S, 0 = off): the Fleet API's (a SuperNode
    fetching a message's objects) and the Runtime API's (the ServerApp fetching a reply's). A
    message is pullable as soon as it is stored, before its objects are pushed; every node then
    asked for each missing object again and again (back-off from 0.05 s to 1 s, two requests in
    flight per node), each a signed HTTPS request through the one SuperLink, while the
    ServerApp was still pushing to the other nodes (in a 50-node attempt on two cores, 37 of 50
    nodes gave up fetching after 60 s). A held pull is answered as soon as that object is stored (`store_object` rings
    its bell), or after the hold with Flower's own "not available" answer."""
    _check_version()
    hold = object_hold_s() if hold_s is None else hold_s
    if hold <= 0:
        return None
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    bell = Doorbell(max_held=OBJECT_HELD_MAX, max_keys=OBJECT_KEYS_MAX)
    for cls in (InMemoryLinkState, SqlLinkState):
        store = cls.store_object

        def store_object_and_ring(self, run_id, session_id, object_id, object_content, _store=store):
            stored = _store(self, run_id, session_id, object_id, object_content)
            if stored:
                bell.ring(object_id)
            return stored

        cls.store_object = store_object_and_ring

    threads_raised: list = []
    _hold_in_server_threads(bell)

    def held(pull_again, response, object_id: str, seen: int):
        if response.object_available or not response.object_found or bell.closed:
            return response
        if not threads_raised:
            _wait_threads()
            threads_raised.append(True)
        if bell.wait(object_id, seen, hold):
            return pull_again()
        return response

    fleet_pull = fleet_handlers.pull_object

    def fleet_pull_object_held(request, state):
        seen = bell.rung(request.object_id)
        response = fleet_pull(request=request, state=state)
        return held(lambda: fleet_pull(request=request, state=state), response, request.object_id, seen)

    runtime_pull = runtime_handlers.pull_object

    def runtime_pull_object_held(request, state, task):
        seen = bell.rung(request.object_id)
        response = runtime_pull(request, state, task)
        return held(lambda: runtime_pull(request, state, task), response, request.object_id, seen)

    fleet_handlers.pull_object = fleet_pull_object_held
    runtime_handlers.pull_object = runtime_pull_object_held
    _close_on_exit(bell)
    return bell


def _close_on_exit(bell: Doorbell) -> None:
    """Stopping the process wakes every held request first: uvicorn's signal handler (the
    SuperLink serves in the main thread) and Flower's exit handlers (the SuperNode stops its
    Runtime API server from one, after ours)."""
    import uvicorn.server
    from flwr.supercore.exit import add_exit_handler
    add_exit_handler(bell.close, run_before_force_exit=True)
    handle_exit = uvicorn.server.Server.handle_exit

    def handle_exit_waking_held(self, sig, frame):
        bell.close()
        handle_exit(self, sig, frame)

    uvicorn.server.Server.handle_exit = handle_exit_waking_held


KEEPALIVE_ENV = "FEDHAEM_FLOWER_KEEPALIVE_S"
KEEPALIVE_S = 60.0  # over the SuperNode's 25 s heartbeat period


def keepalive_s() -> float:
    return _seconds(KEEPALIVE_ENV, KEEPALIVE_S, 0, 600)


def apply_server_keepalive() -> None:
    """uvicorn keeps an idle connection open for 5 s by default and httpx for 5 s too, so every
    SuperNode heartbeat (each 25 s, on its own connection while the node's pull is held) paid a
    new TLS handshake. The tuned SuperLink keeps idle connections KEEPALIVE_S + 15 s (longer than
    its clients, so a client never sends on a connection the server is closing)."""
    _check_version()
    keep = keepalive_s()
    if keep <= 0:
        return
    import uvicorn
    run = uvicorn.run

    def run_keeping_alive(*args, **kwargs):
        kwargs.setdefault("timeout_keep_alive", int(keep) + 15)
        return run(*args, **kwargs)

    uvicorn.run = run_keeping_alive


def apply_client_keepalive() -> None:
    """The tuned SuperNode's HTTP clients (Flower's ProtobufClient) keep idle connections for
    KEEPALIVE_S (FEDHAEM_FLOWER_KEEPALIVE_S; 0 = httpx's 5 s)."""
    _check_version()
    keep = keepalive_s()
    if keep <= 0:
        return
    import httpx
    from flwr.supercore.protobuf import client as protobuf_client
    if getattr(protobuf_client, "httpx", None) is not httpx:
        raise RuntimeError("flwr.supercore.protobuf.client no longer builds its client with httpx")
    shim = types.ModuleType("httpx")
    shim.__dict__.update(httpx.__dict__)

    def client(*args, **kwargs):
        kwargs.setdefault("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                                 keepalive_expiry=keep))
        return httpx.Client(*args, **kwargs)

    shim.Client = client
    protobuf_client.httpx = shim


TASK_KEY = "task"


def apply_task_hold(hold_s: float | None = None) -> Doorbell | None:
    """Hold an AcquireTask of the Runtime API (a launcher asking for a ServerApp or ClientApp to
    start) that finds no pending task until work comes, up to TASK_HOLD_S (5 s;
    FEDHAEM_FLOWER_TASK_HOLD_S, 0 = off): see the module's doc. The prefork launchers notice a
    held answer and ask again at once."""
    _check_version()
    hold = task_hold_s() if hold_s is None else hold_s
    if hold <= 0:
        return None
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.supercore.servicer.runtime import runtime_handlers
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    bell = Doorbell()
    for cls in (InMemoryLinkState, SqlLinkState):
        create_run = cls.create_run

        def create_run_and_ring(self, *args, _create=create_run, **kwargs):
            result = _create(self, *args, **kwargs)
            bell.ring(TASK_KEY)
            return result

        cls.create_run = create_run_and_ring

    # The SuperNode creates a message's task before it stores the message; a ClientApp started
    # in between would find no message ("No messages received from Runtime API"), so its bell
    # rings once the message is stored (its objects follow, pulled with back-off as in Flower).
    store_message = InMemoryNodeState.store_message

    def store_message_and_ring(self, message, _store=store_message):
        result = _store(self, message)
        if result is not None and not message.metadata.reply_to_message_id:
            bell.ring(TASK_KEY)
        return result

    InMemoryNodeState.store_message = store_message_and_ring

    acquire = runtime_handlers.acquire_task
    threads_raised: list = []
    _hold_in_server_threads(bell)

    def acquire_task_held(request, state):
        seen = bell.rung(TASK_KEY)
        response = acquire(request, state)
        if response.HasField("task") or bell.closed:
            return response
        if not threads_raised:
            _wait_threads()
            threads_raised.append(True)
        if bell.wait(TASK_KEY, seen, hold):
            return acquire(request, state)
        return response

    runtime_handlers.acquire_task = acquire_task_held
    _close_on_exit(bell)
    return bell


SCOPED_MIDDLEWARE_ENV = "FEDHAEM_FLOWER_SCOPED_MIDDLEWARE"
CONTROL_PREFIX = "/v1/control/"
FLEET_PREFIX = "/v1/fleet/"


class PathScoped:
    """A pure-ASGI stand-in for one of Flower's path-specific middlewares: requests under
    `prefix` (and, with `plugin_state`, only while the app has that plugin) go through the
    middleware, every other request straight to the next layer. Each of Flower's eight layers is
    a Starlette BaseHTTPMiddleware (a task group and memory streams per request), and for a path
    outside its API each one only calls the next layer."""

    def __init__(self, app, middleware, prefix: str, plugin_state: str | None = None, **kwargs):
        self.app = app
        self.inner = middleware(app, **kwargs)
        self.prefix = prefix
        self.plugin_state = plugin_state

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and str(scope.get("path", "")).startswith(self.prefix):
            state = getattr(scope.get("app"), "state", None)
            if self.plugin_state is None or getattr(state, self.plugin_state, None) is not None:
                await self.inner(scope, receive, send)
                return
        await self.app(scope, receive, send)


def apply_scoped_middleware() -> None:
    """The tuned SuperLink runs Flower's Control-only middlewares (authentication, licence,
    no-cache headers, event log) for Control requests only and its Fleet-only ones (node
    authentication, event log) for Fleet requests only (PathScoped), each exactly where its own
    dispatch acts; the error translation and protobuf translation stay on every request, and
    so does any middleware this list does not name (an extension's). An idle node's requests
    (held pulls, heartbeats) pass four layers instead of eight. FEDHAEM_FLOWER_SCOPED_MIDDLEWARE=0
    keeps Flower's stack."""
    _check_version()
    if os.environ.get(SCOPED_MIDDLEWARE_ENV, "1").strip() == "0":
        return
    from starlette.middleware import Middleware
    from flwr.superlink import main as superlink_main
    from flwr.superlink.routers.control import middlewares as control_mw
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware

    scopes = {
        control_mw.ControlSensitiveResponseMiddleware: (CONTROL_PREFIX, None),
        control_mw.ControlAuthenticationMiddleware: (CONTROL_PREFIX, None),
        control_mw.ControlLicenseMiddleware: (CONTROL_PREFIX, None),
        control_mw.ControlEventLogMiddleware: (CONTROL_PREFIX, "control_event_log_plugin"),
        NodeAuthMiddleware: (FLEET_PREFIX, None),
        FleetEventLogMiddleware: (FLEET_PREFIX, "fleet_event_log_plugin"),
    }
    stock = superlink_main._get_middleware
    if getattr(stock, "fedhaem_scoped", False):
        return
    found = {m.cls for m in stock()}
    if not set(scopes) <= found:  # Flower's stack changed: scope nothing rather than guess
        raise RuntimeError("flwr.superlink.main._get_middleware no longer lists the middlewares "
                           f"FedHaem scopes: {sorted(c.__name__ for c in set(scopes) - found)}")

    def scoped() -> list:
        out = []
        for m in stock():
            if m.cls in scopes and not m.args:
                prefix, plugin = scopes[m.cls]
                out.append(Middleware(PathScoped, middleware=m.cls, prefix=prefix, plugin_state=plugin,
                                      **m.kwargs))
            else:
                out.append(m)
        return out

    scoped.fedhaem_scoped = True
    superlink_main._get_middleware = scoped


def held_answer(started: float) -> bool:
    """An empty answer that took HELD_PULL_S or more was held by a tuned server: ask again now."""
    return _time.monotonic() - started >= HELD_PULL_S


def apply_quiet_telemetry() -> None:
    """With Flower's telemetry off (FLWR_TELEMETRY_ENABLED=0, FedHaem's default: processes
    .flower_env), answer its events at once. Flower 1.42 builds each event's payload before it
    looks at that switch (flwr/supercore/telemetry.py create_event): platform.architecture() runs
    `file` on the interpreter and platform.uname().processor runs `uname -p`, two subprocesses
    forked from every ClientApp and ServerApp as it starts (from the box's warm process at 50
    nodes: 4.5% of its samples in a run's first phase, py-spy). Nothing is posted either way.
    Telemetry on, or its payload logging on (FLWR_TELEMETRY_LOGGING=1), keeps Flower's code."""
    _check_version()
    from flwr.supercore import telemetry
    if telemetry.FLWR_TELEMETRY_ENABLED != "0" or telemetry.FLWR_TELEMETRY_LOGGING == "1":
        return
    if not callable(getattr(telemetry, "create_event", None)):
        raise RuntimeError("flwr.supercore.telemetry has no create_event")

    def create_event(event_type, event_details=None) -> str:
        return "disabled"  # what Flower's create_event returns with telemetry off

    telemetry.create_event = create_event


def apply() -> None:
    """All tuning that applies inside a ClientApp or ServerApp process."""
    apply_pull_backoff()
    apply_quiet_telemetry()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("supernode", "superlink"):
        raise SystemExit("usage: python -m fl_engine.deploy.flower_tuning supernode|superlink <Flower's arguments>")
    apply_quiet_telemetry()
    if argv[0] == "superlink":
        apply_superlink_pull_hold()
        apply_object_hold()
        apply_task_hold()
        apply_server_keepalive()
        apply_scoped_middleware()
        from flwr.superlink.cli.flower_superlink import flower_superlink
        sys.argv = ["flower-superlink", *argv[1:]]
        sys.exit(flower_superlink())
    apply_supernode_sleeps()
    apply_pull_backoff()
    apply_task_hold()
    apply_client_keepalive()
    claims = os.environ.get(NODE_CLAIMS_ENV, "").strip()
    if claims:  # FedHaem's own: this node's tasks are claimed here, not by a launcher process
        from fl_engine.deploy import prefork  # cycle: prefork imports this module
        try:
            conf = json.loads(claims)
            prefork.serve_in_supernode(str(conf["address"]), str(conf["zygote"]), float(conf["poll_interval_s"]),
                                       float(conf["idle_poll_s"]))
        except (ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"{NODE_CLAIMS_ENV}: {err!r} in {claims[:200]!r}") from None
    from flwr.supernode.cli.flower_supernode import flower_supernode
    sys.argv = ["flower-supernode", *argv[1:]]
    flower_supernode()


if __name__ == "__main__":
    main()
