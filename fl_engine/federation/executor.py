"""Run a study without Flower processes: the same loop and node functions, called directly."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fl_engine.federation.analysis import run_analysis
from fl_engine.federation.config import RunConfig, parse_run_config
from fl_engine.federation.core import NodeReply, NodeRequest, check_reply_privacy, handle_request
from fl_engine.federation.events import EventSink
from fl_engine.federation.loop import History, run_federation


class LocalTransport:
    """Nodes are in-memory tables keyed by name; a node failure becomes that node's error, and so
    does a reply that fails the privacy check the ClientApp applies. With `keep_replies`, every
    accepted reply is kept in `replies` as (kind, reply)."""

    def __init__(self, cfg: RunConfig, node_tables: dict[str, pd.DataFrame], keep_replies: bool = False):
        self.cfg = cfg
        self.tables = dict(node_tables)
        self.keep_replies = keep_replies
        self.replies: list[tuple[str, NodeReply]] = []

    def nodes(self) -> list[str]:
        return sorted(self.tables)

    def request(self, requests: dict[str, NodeRequest], timeout_s: float) -> dict[str, NodeReply | Exception]:
        out: dict[str, NodeReply | Exception] = {}
        for name, req in requests.items():
            try:
                reply = handle_request(self.tables[name], self.cfg, req, name)
                # the same check the ClientApp applies before a reply leaves a node
                check_reply_privacy(req.kind, reply, [np.shape(a) for a in req.arrays] if req.arrays else None, req)
                out[name] = reply
                if self.keep_replies:
                    self.replies.append((req.kind, reply))
            except Exception as err:  # one node failing must not hide the others' replies
                out[name] = err
        return out


def run_in_process(config: dict | RunConfig, node_tables: dict[str, pd.DataFrame]) -> History:
    """Run a study over {node name: ML-ready table} in this process; returns the History
    (per-round metrics, final weights, Preprocessor dict). Writes metrics/model files when the
    config names them, exactly like a deployed run."""
    cfg = config if isinstance(config, RunConfig) else parse_run_config(config)
    if not node_tables:
        raise ValueError("run_in_process: no node tables")
    if cfg.task == "analysis":
        raise ValueError("run_in_process runs survival studies; an analysis run: run_analysis_in_process")
    return run_federation(cfg, LocalTransport(cfg, node_tables), EventSink.from_config(cfg))


def run_analysis_in_process(config: dict | RunConfig, node_tables: dict[str, pd.DataFrame],
                            keep_replies: bool = False) -> tuple[dict, LocalTransport]:
    """Run an analysis study (task "analysis") over {node name: ML-ready table} in this process,
    every reply passing the nodes' reply check; returns (analysis.json document, the transport,
    whose `replies` hold the accepted replies when `keep_replies`)."""
    cfg = config if isinstance(config, RunConfig) else parse_run_config(config)
    if not node_tables:
        raise ValueError("run_analysis_in_process: no node tables")
    if cfg.task != "analysis":
        raise ValueError(f"run_analysis_in_process: task is {cfg.task!r}, not 'analysis'")
    transport = LocalTransport(cfg, node_tables, keep_replies=keep_replies)
    return run_analysis(cfg, transport, EventSink.from_config(cfg)), transport
