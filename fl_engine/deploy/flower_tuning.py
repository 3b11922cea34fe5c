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
    """Shorter initial back-off when pulling message objects (ClientApp, ServerApp)."""
    _check_version()
    from flwr.supercore.inflatable import inflatable_utils as iu
    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        kw = dict(fn.__kwdefaults__ or {})
        if "initial_backoff" not in kw or "backoff_cap" not in kw:
            raise RuntimeError(f"{fn.__qualname__} has no initial_backoff/backoff_cap keyword defaults")
        kw["initial_backoff"] = INITIAL_BACKOFF_S
        kw["backoff_cap"] = BACKOFF_CAP_S
        fn.__kwdefaults__ = kw


def apply_supernode_sleeps() -> None:
    """Shorter idle/reply waits in the SuperNode's main loop."""
    _check_version()
    from flwr.supernode import start_client_internal as sci

    def sleep(seconds: float) -> None:
        _time.sleep(SUPERNODE_SLEEPS.get(seconds, seconds))

    shim = types.ModuleType("time")
    shim.__dict__.update({k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    shim.sleep = sleep
    sci.time = shim


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
