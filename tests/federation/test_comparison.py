"""The comparison phase: each node's isolated model and the conventional scores, on the same
held-out split as the federated model, as scalars only."""
import numpy as np
import pytest

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeReply, check_reply_privacy, split_holdout
from fl_engine.federation.executor import run_in_process
from fl_engine.federation.loop import comparison_metrics
from fl_engine.metrics import harrell_c
from fl_engine.scores.conventional import conventional_risks


def _last(hist) -> dict:
    return {(m["node"], m["name"]): m["value"] for m in hist.rounds[-1]["metrics"]}


def test_comparison_reports_isolated_and_conventional_per_node_and_weighted(node_tables):
    hist = run_in_process({"dataset": "d", "num_rounds": 2, "min_nodes": 3, "seed": 1, "comparison": True},
                          node_tables)
    last = _last(hist)
    cfg = parse_run_config({"dataset": "d", "seed": 1})
    for node, df in node_tables.items():
        assert 0 <= last[(node, "isolated_c_index")] <= 1
        _, hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)
        assert last[(node, "n_holdout")] == len(hold)
        # the conventional score's C is Harrell's C of the score on the same held-out rows
        risk = conventional_risks(hold.reset_index(drop=True), "MDS")["ipss_m"]
        ok = ~np.isnan(risk)
        want = harrell_c(hold["os_months"].to_numpy()[ok], hold["os_event"].to_numpy()[ok], risk[ok])
        assert last[(node, "ipss_m_c_index")] == pytest.approx(want, abs=1e-12)
        assert last[(node, "ipss_m_n")] == ok.sum()
    w = np.array([last[(n, "n_holdout")] for n in node_tables])
    iso = np.array([last[(n, "isolated_c_index")] for n in node_tables])
    assert last[("global", "isolated_c_index")] == pytest.approx(float((iso * w).sum() / w.sum()))
    assert ("global", "ipss_r_c_index") in last


def test_isolated_model_of_a_lone_node_is_the_federated_model(node_tables):
    """FedAvg over one node is local training: with one node, the isolated model (same initial
    weights, schedule and seeds) must score exactly the federated model's C-index."""
    one = {"H1": node_tables["H1"]}
    hist = run_in_process({"dataset": "d", "num_rounds": 3, "min_nodes": 1, "seed": 2, "comparison": True}, one)
    last = _last(hist)
    assert last[("H1", "isolated_c_index")] == pytest.approx(last[("H1", "c_index")], abs=1e-9)


def test_without_comparison_no_reference_metrics(node_tables):
    hist = run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 3}, node_tables)
    assert not any(m["name"].startswith("isolated") for m in hist.rounds[-1]["metrics"])


def test_reference_reply_may_not_carry_arrays():
    check_reply_privacy("reference", NodeReply("H1", metrics={"isolated_c_index": 0.7}), None)
    with pytest.raises(ValueError, match="array"):
        check_reply_privacy("reference", NodeReply("H1", arrays=[np.zeros(3)], metrics={}), None)


def test_comparison_metrics_weights_each_score_by_its_own_count():
    out = comparison_metrics({"A": {"n_holdout": 10, "isolated_c_index": 0.6, "ipss_m_c_index": 0.7, "ipss_m_n": 10},
                              "B": {"n_holdout": 30, "isolated_c_index": 0.8, "ipss_m_c_index": 0.5, "ipss_m_n": 10}})
    g = {m["name"]: m["value"] for m in out if m["node"] == "global"}
    assert g["isolated_c_index"] == pytest.approx(0.75)
    assert g["ipss_m_c_index"] == pytest.approx(0.6)
