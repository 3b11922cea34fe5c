"""Flower ServerApp: parses the run config and runs `loop.run_federation` over the Grid.

Replies are collected with `Grid.push_messages` / `Grid.pull_messages` polled every
`poll_interval_s` (0.1 s by default) instead of `send_and_receive`, which sleeps 3 s per poll.
"""
from __future__ import annotations

import logging
import threading
import time

from flwr.app import Context, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from fl_engine.deploy import flower_tuning
from fl_engine.deploy.processes import exit_when_superlink_gone
from fl_engine.federation.config import parse_run_config
from fl_engine.federation.contract import from_flower
from fl_engine.federation.core import NodeReply, NodeRequest, NodeUnreachable
from fl_engine.federation.flower_io import MESSAGE_TYPES, reply_from_message, request_content
from fl_engine.federation.loop import run_federation

log = logging.getLogger("fedhaem.federation")

# Errors the SuperLink itself writes when a message expired unanswered or its node is offline:
# the node is gone, not failing on the data (ClientApp exceptions keep their own codes).
UNREACHABLE = {ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE, ErrorCode.NODE_UNAVAILABLE}


class GridTransport:
    """`loop.Transport` over a Flower Grid; node keys are Flower node ids as strings (uint64)."""

    def __init__(self, grid: Grid, poll_interval_s: float = 0.1, participants: set[str] | None = None):
        self.grid = grid
        self.poll = poll_interval_s
        # The run reaches these node ids only; other connected nodes never get a message.
        self.participants = participants

    def nodes(self) -> list[str]:
        ids = [str(i) for i in self.grid.get_node_ids()]
        return [i for i in ids if self.participants is None or i in self.participants]

    def request(self, requests: dict[str, NodeRequest], timeout_s: float) -> dict[str, NodeReply | Exception]:
        keys = list(requests)
        outside = [k for k in keys if self.participants is not None and k not in self.participants]
        if outside:
            raise RuntimeError(f"refusing to message node(s) outside the run's participants: {outside}")
        msgs = [Message(request_content(requests[k]), int(k), MESSAGE_TYPES[requests[k].kind],
                        ttl=max(timeout_s, 1.0), group_id=str(requests[k].config.get("round", 0)))
                for k in keys]
        t_push = time.monotonic()
        ids = list(self.grid.push_messages(msgs))
        t_push = time.monotonic() - t_push
        out: dict[str, NodeReply | Exception] = {}
        pending = {}
        for k, mid in zip(keys, ids):
            if mid:
                pending[mid] = k
            else:
                out[k] = RuntimeError("message could not be pushed to the SuperLink")
        deadline = time.monotonic() + timeout_s
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                k = pending.pop(reply.metadata.reply_to_message_id, None)
                if k is None:
                    continue
                if reply.has_error():
                    kind = NodeUnreachable if reply.error.code in UNREACHABLE else RuntimeError
                    out[k] = kind(f"node error {reply.error.code}: {reply.error.reason}")
                else:
                    try:
                        out[k] = reply_from_message(reply)
                    except Exception as err:  # a malformed reply is that node's failure
                        out[k] = ValueError(f"malformed reply: {err}")
            if not pending:
                break
            if time.monotonic() >= deadline:
                for k in pending.values():
                    out[k] = TimeoutError(f"no reply within {timeout_s:g} s")
                break
            time.sleep(self.poll)
        log.info("%s: pushed %d in %.2f s, %d replies %.2f s later",
                 next(iter(requests.values())).kind if requests else "-", len(msgs), t_push, len(out),
                 time.monotonic() - (deadline - timeout_s))
        return out


def _warm_torch() -> None:
    """Import torch on a side thread while the run's first phase waits for the nodes' stats
    replies (the model, built after them, needs it): start-up no longer waits for that import."""
    def warm() -> None:
        try:
            import torch  # noqa: F401
        except Exception:  # the main thread's own import reports any real problem
            pass
    threading.Thread(target=warm, name="warm-torch", daemon=True).start()


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    exit_when_superlink_gone(grid)  # a ServerApp whose SuperLink died exits within ~10 s
    cfg = parse_run_config(from_flower(dict(context.run_config)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if flower_tuning.enabled():
        flower_tuning.apply()
    if cfg.task == "survival":  # only survival models need torch on the manager
        _warm_torch()
    transport = GridTransport(grid, cfg.poll_interval_s,
                              {p["node_id"] for p in cfg.participants} if cfg.participants else None)
    if cfg.task == "synthesis":
        from fl_engine.federation.synthesis import run_synthesis  # the generators: only for synthesis runs
        run_synthesis(cfg, transport)
        return
    if cfg.task == "analysis":
        from fl_engine.federation.analysis import run_analysis  # aggregates only: describe, KM, Cox
        run_analysis(cfg, transport)
        return
    run_federation(cfg, transport)
