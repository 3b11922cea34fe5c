"""The comparison phase: each node's isolated model and the conventional scores, on the same
held-out split as the federated model, as scalars only."""
import numpy as np
import pytest

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeReply, check_reply_privacy, split_holdout
from fl_engine.federation.executor import run_in_process
from fl_engine.federation.loop import comparison_metrics
from fedhaem_kernel.metrics import harrell_c
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


def test_reference_reply_may_not_carry_other_arrays():
    check_reply_privacy("reference", NodeReply("H1", metrics={"isolated_c_index": 0.7}), None)
    with pytest.raises(ValueError, match="array"):
        check_reply_privacy("reference", NodeReply("H1", arrays=[np.zeros(3)], metrics={}), None)


def test_comparison_metrics_weights_each_score_by_its_own_count():
    out = comparison_metrics({"A": {"n_holdout": 10, "isolated_c_index": 0.6, "ipss_m_c_index": 0.7, "ipss_m_n": 10},
                              "B": {"n_holdout": 30, "isolated_c_index": 0.8, "ipss_m_c_index": 0.5, "ipss_m_n": 25}})
    g = {m["name"]: m["value"] for m in out if m["node"] == "global"}
    assert g["isolated_c_index"] == pytest.approx(0.75)
    assert g["ipss_m_c_index"] == pytest.approx((0.7 * 10 + 0.5 * 25) / 35)
    assert (g["ipss_m_n"], g["ipss_m_of"], g["ipss_m_comparable"]) == (35, 40, 1)


def test_curves_by_group_from_node_counts_are_the_pooled_kaplan_meier():
    """Counts add up over nodes, and with whole-month follow-up the monthly estimate equals the
    exact Kaplan-Meier curve of the pooled patients just before each month boundary."""
    from fl_engine.federation.curves import CURVE_EDGES_MONTHS, curves_from_counts, group_counts, layout
    from fedhaem_kernel.metrics import kaplan_meier, step_at

    rng = np.random.default_rng(0)
    n = 400
    d = rng.integers(0, 130, n).astype(float)
    e = rng.integers(0, 2, n).astype(float)
    g = rng.integers(-1, 3, n)
    parts = [slice(0, 240), slice(240, 360), slice(360, n)]
    summed = sum(group_counts(d[p], e[p], g[p], 3)[0] for p in parts)
    pooled, _ = group_counts(d, e, g, 3)
    np.testing.assert_array_equal(summed, pooled)
    rows = len(layout("MDS"))
    full = np.zeros((rows, 2, len(CURVE_EDGES_MONTHS) - 1))
    full[:3] = summed
    cur = curves_from_counts(full, "MDS")
    assert [c["category"] for c in cur["groups"]] == ["2-year survival >= 80 %", "2-year survival 50-80 %",
                                                      "2-year survival < 50 %"]
    for k, c in enumerate(cur["groups"]):
        t, s = kaplan_meier(d[g == k], e[g == k])
        want = step_at(t, s, CURVE_EDGES_MONTHS[1:] - 0.5)
        np.testing.assert_allclose(c["survival"][1:], want, atol=1e-5)
        assert c["n"] == (g == k).sum()


def test_small_groups_are_suppressed():
    from fl_engine.federation.curves import group_counts
    counts, suppressed = group_counts(np.array([5.0, 6, 7, 8]), np.array([1.0, 0, 1, 1]), np.array([0, 0, 0, 1]), 2,
                                      min_cell=2)
    assert suppressed == 1 and counts[1].sum() == 0 and counts[0, 1, 0] == 3


def test_comparison_run_carries_curves_by_model_and_score_group(node_tables):
    hist = run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 3, "comparison": True}, node_tables)
    scores = {c["score"] for c in hist.curves["groups"]}
    assert {"model", "ipss_m", "ipss_r"} <= scores
    total_model = sum(c["n"] for c in hist.curves["groups"] if c["score"] == "model")
    assert total_model == sum(m["value"] for m in hist.rounds[-1]["metrics"]
                              if m["name"] == "n_holdout" and m["node"] != "global") / 2  # evaluate + comparison
    for c in hist.curves["groups"]:
        assert c["survival"][0] == 1.0 and all(a >= b for a, b in zip(c["survival"], c["survival"][1:]))


def test_reference_reply_arrays_must_be_group_counts():
    from fl_engine.federation.curves import CURVE_EDGES_MONTHS
    ok = np.zeros((5, 2, len(CURVE_EDGES_MONTHS) - 1))
    check_reply_privacy("reference", NodeReply("H1", arrays=[ok]), None)
    for bad in (ok + 0.5, ok - 1, np.zeros((5, 3, len(CURVE_EDGES_MONTHS) - 1))):
        with pytest.raises(ValueError, match="group counts"):
            check_reply_privacy("reference", NodeReply("H1", arrays=[bad]), None)
