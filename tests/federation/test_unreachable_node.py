"""A node the SuperLink reports unreachable (message expired unanswered, node offline) is left
out of the rest of the run, exactly like a node that missed the deadline: it is not asked again,
and the run goes on with the others while they are at least min_nodes."""
import pytest

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import FederationError, NodeUnreachable
from fl_engine.federation.executor import LocalTransport
from fl_engine.federation.events import EventSink
from fl_engine.federation.loop import run_federation


class _DiesAfterRound1(LocalTransport):
    """LocalTransport whose node `gone` stops answering from round 2 on, as a killed node does."""

    def __init__(self, cfg, tables, gone, error=NodeUnreachable):
        super().__init__(cfg, tables)
        self.gone, self.error, self.asked = gone, error, []

    def request(self, requests, timeout_s):
        out = super().request(requests, timeout_s)
        for k, req in requests.items():
            self.asked.append((k, req.kind, req.config.get("round")))
            if k == self.gone and (req.config.get("round") or 0) >= 2:
                out[k] = self.error("node error 3: Error: Message Unavailable")
        return out


def _run(tables, gone, error=NodeUnreachable, **cfg):
    cfg = parse_run_config({"dataset": "study", "num_rounds": 3, "min_nodes": 2, "local_epochs": 1,
                            "seed": 5, **cfg})
    t = _DiesAfterRound1(cfg, tables, gone, error)
    return run_federation(cfg, t, EventSink.from_config(cfg)), t


def test_an_unreachable_node_is_dropped_and_the_run_completes(node_tables):
    hist, t = _run(node_tables, "H3")
    assert [r["round"] for r in hist.rounds] == [1, 2, 3]
    trained = lambda r: {m["node"] for m in hist.rounds[r - 1]["metrics"] if m["name"] == "n_train"}
    assert trained(1) == {"H1", "H2", "H3"} and trained(2) == trained(3) == {"H1", "H2"}
    # asked once in round 2 (training), never after
    assert [(kind, r) for k, kind, r in t.asked if k == "H3" and (r or 0) >= 2] == [("train", 2)]


def test_a_failing_clientapp_is_not_dropped(node_tables):
    """A node whose ClientApp raised keeps being asked (it may fail on one phase only)."""
    hist, t = _run(node_tables, "H3", error=RuntimeError)
    assert [r["round"] for r in hist.rounds] == [1, 2, 3]
    assert ("H3", "train", 3) in t.asked


def test_too_few_reachable_nodes_fail_the_run_naming_the_node(node_tables):
    with pytest.raises(FederationError, match=r"round 2 training: 2 node\(s\) replied, fewer than min_nodes=3.*H3"):
        _run(node_tables, "H3", min_nodes=3)
