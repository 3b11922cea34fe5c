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
Pinned to flwr 1.42: `apply()` refuses another version rather than guess.

    python -m fl_engine.deploy.flower_tuning supernode <flower-supernode arguments>
"""
from __future__ import annotations

import os
import sys
import time as _time
import types

ENV = "FEDHAEM_FLOWER_TUNING"
SUPERNODE_SLEEPS = {3: 0.1, 0.5: 0.05}
INITIAL_BACKOFF_S = 0.05
BACKOFF_CAP_S = 1.0
ACTIVE_WINDOW_S = 30.0
IDLE_POLL_ENV = "FEDHAEM_FLOWER_IDLE_POLL_S"
IDLE_POLL_S = 2.0
PULL_MAX_ENV = "FEDHAEM_FLOWER_PULL_MAX_S"
PULL_MAX_S = 60.0


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


class Activity:
    """When this process last had work: poll fast within `window_s` of it, slowly otherwise."""

    def __init__(self, fast_s: float, idle_s: float, window_s: float = ACTIVE_WINDOW_S):
        self.fast_s, self.idle_s, self.window_s = fast_s, idle_s, window_s
        self.last = -float("inf")

    def mark(self) -> None:
        self.last = _time.monotonic()

    def poll_s(self) -> float:
        return self.fast_s if _time.monotonic() - self.last < self.window_s else max(self.fast_s, self.idle_s)


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
    from flwr.supernode import start_client_internal as sci
    activity = Activity(SUPERNODE_SLEEPS[3], idle_poll_s())
    pull_and_store = sci._pull_and_store_message
    if not callable(pull_and_store):
        raise RuntimeError("flwr.supernode.start_client_internal has no _pull_and_store_message")

    def pull_and_store_noting_activity(*args, **kwargs):
        run_id = pull_and_store(*args, **kwargs)
        if run_id is not None:
            activity.mark()
        return run_id

    def sleep(seconds: float) -> None:
        _time.sleep(activity.poll_s() if seconds == 3 else SUPERNODE_SLEEPS.get(seconds, seconds))

    shim = types.ModuleType("time")
    shim.__dict__.update({k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    shim.sleep = sleep
    sci.time = shim
    sci._pull_and_store_message = pull_and_store_noting_activity
    return activity


def apply() -> None:
    """All tuning that applies inside a ClientApp or ServerApp process."""
    apply_pull_backoff()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "supernode":
        raise SystemExit("usage: python -m fl_engine.deploy.flower_tuning supernode <flower-supernode args>")
    apply_supernode_sleeps()
    apply_pull_backoff()
    from flwr.supernode.cli.flower_supernode import flower_supernode
    sys.argv = ["flower-supernode", *argv[1:]]
    flower_supernode()


if __name__ == "__main__":
    main()
