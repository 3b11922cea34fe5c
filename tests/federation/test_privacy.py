"""Privacy safeguards: the DP-FedAvg math (pure, property tests) and their enforcement in the
study loop (in-process federation, the same functions the deployed ClientApp/ServerApp call)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import FederationError, fedavg, round_metrics
from fl_engine.federation.executor import run_in_process
from fl_engine.federation.privacy import (
    NodeRefused, add_gaussian_noise, check_min_patients, clip_update, gaussian_noise_std, noise_seed,
    suppress_small_cell, update_norm,
)

shapes = st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=4)


def _models(shape_list, seed, scale):
    rng = np.random.default_rng(seed)
    g = [rng.normal(size=s).astype(np.float32) for s in shape_list]
    w = [(a + scale * rng.normal(size=a.shape)).astype(np.float32) for a in g]
    return g, w


@settings(max_examples=200, deadline=None)
@given(shapes, st.integers(0, 10_000), st.floats(1e-3, 1e3), st.floats(1e-4, 1e3))
def test_clipping_never_exceeds_the_bound(shape_list, seed, scale, clip):
    g, w = _models(shape_list, seed, scale)
    out = clip_update(g, w, clip)
    assert [a.shape for a in out] == [a.shape for a in w] and [a.dtype for a in out] == [a.dtype for a in w]
    assert update_norm(g, out) <= clip
    if update_norm(g, w) > clip:
        # the direction is kept: the clipped update is a positive multiple of the original one
        d = np.concatenate([(np.float64(b) - a).ravel() for a, b in zip(g, w)])
        dc = np.concatenate([(np.float64(b) - a).ravel() for a, b in zip(g, out)])
        cos = d @ dc / (np.linalg.norm(d) * np.linalg.norm(dc)) if np.linalg.norm(dc) > 0 else 1.0
        assert cos == pytest.approx(1.0, abs=1e-4)


@given(shapes, st.integers(0, 10_000))
def test_an_update_within_the_bound_is_unchanged(shape_list, seed):
    g, w = _models(shape_list, seed, 0.01)
    out = clip_update(g, w, update_norm(g, w) + 1.0)
    for a, b in zip(out, w):
        np.testing.assert_array_equal(a, b)


@given(shapes, st.integers(0, 10_000), st.lists(st.floats(0.5, 500), min_size=1, max_size=5))
def test_zero_noise_gives_plain_fedavg(shape_list, seed, counts):
    models = [_models(shape_list, seed + i, 1.0)[1] for i in range(len(counts))]
    plain = fedavg(models, counts)
    std = gaussian_noise_std(0.0, 1.0, len(counts))
    assert std == 0.0
    for a, b in zip(add_gaussian_noise(plain, std, noise_seed(3, 1)), plain):
        np.testing.assert_array_equal(a, b)


@given(shapes, st.integers(0, 2**31 - 1), st.floats(1e-3, 10))
def test_seeded_noise_is_reproducible_and_has_the_stated_scale(shape_list, seed, std):
    w = [np.zeros(s, np.float32) for s in shape_list]
    a = add_gaussian_noise(w, std, seed)
    b = add_gaussian_noise(w, std, seed)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = add_gaussian_noise(w, std, seed + 1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_noise_std_is_z_times_c_over_nodes():
    assert gaussian_noise_std(1.1, 2.0, 4) == pytest.approx(0.55)
    big = add_gaussian_noise([np.zeros(200_000, np.float64)], gaussian_noise_std(1.0, 0.5, 5), 11)[0]
    assert big.mean() == pytest.approx(0.0, abs=0.002) and big.std() == pytest.approx(0.1, rel=0.01)
    assert noise_seed(0, 1) != noise_seed(0, 2)
    with pytest.raises(ValueError):
        gaussian_noise_std(1.0, 0.0, 3)
    with pytest.raises(ValueError):
        clip_update([np.zeros(2)], [np.ones(2)], 0.0)


def test_small_cell_rule_counts_patients_and_events():
    assert suppress_small_cell(9, 9, 10) and suppress_small_cell(50, 9, 10) and suppress_small_cell(9, 50, 10)
    assert not suppress_small_cell(10, 10, 10)
    assert not suppress_small_cell(1, 0, 0)  # 0 = off
    with pytest.raises(NodeRefused, match="node H9 refuses to train: its training split has 19 patients, "
                                          "fewer than the study's minimum of 20"):
        check_min_patients(19, 20, "H9")
    check_min_patients(20, 20, "H9")
    check_min_patients(1, 0, "H9")


def test_round_metrics_leave_suppressed_nodes_out_of_the_global_c_index():
    train = {n: {"loss": 1.0, "n_train": 40} for n in ("A", "B", "C")}
    ev = {"A": {"c_index": 0.6, "n_holdout": 30}, "B": {"c_index": 0.9, "n_holdout": 10},
          "C": {"c_index_suppressed": 1, "n_holdout": 8}}
    m = {(x["node"], x["name"]): x["value"] for x in round_metrics(train, ev)}
    assert ("C", "c_index") not in m and m[("C", "c_index_suppressed")] == 1.0
    assert m[("global", "c_index")] == pytest.approx((0.6 * 30 + 0.9 * 10) / 40)


def test_privacy_keys_are_validated():
    with pytest.raises(ValueError, match="dp_clip_norm"):
        parse_run_config({"dp_clip_norm": 0})
    with pytest.raises(ValueError, match="dp_noise_multiplier"):
        parse_run_config({"dp_noise_multiplier": -1})
    with pytest.raises(ValueError, match="min_cell_count"):
        parse_run_config({"min_cell_count": -2})
    cfg = parse_run_config({"dp_enabled": "true", "min_patients_per_node": 20})
    assert cfg.dp_enabled and cfg.min_patients_per_node == 20 and parse_run_config(cfg.to_flat()) == cfg


# --- enforced in the study loop -------------------------------------------------------------
# node_tables (conftest): H1 240, H2 120, H3 40 patients; held-out 20 % (H3: 32 train, 8 held out).

BASE = {"dataset": "d", "num_rounds": 1, "min_nodes": 2, "seed": 4}


def test_a_node_below_the_minimum_refuses_and_the_run_goes_on(node_tables, caplog):
    with caplog.at_level(logging.WARNING, logger="fedhaem.federation"):
        hist = run_in_process({**BASE, "min_patients_per_node": 33}, node_tables)
    assert hist.nodes == ["H1", "H2"]
    assert "node H3 refuses" in caplog.text and "32 patients" in caplog.text and "minimum of 33" in caplog.text
    trained = {m["node"] for m in hist.rounds[0]["metrics"] if m["name"] == "n_train"}
    assert trained == {"H1", "H2"}
    with pytest.raises(FederationError, match="node H3 refuses.*32 patients"):
        run_in_process({**BASE, "min_nodes": 3, "min_patients_per_node": 33}, node_tables)
    assert run_in_process({**BASE, "min_patients_per_node": 32}, node_tables).nodes == ["H1", "H2", "H3"]


@pytest.mark.parametrize("fuse", [False, True])
def test_small_held_out_splits_report_no_c_index(node_tables, fuse):
    hist = run_in_process({**BASE, "num_rounds": 2, "min_nodes": 3, "min_cell_count": 10,
                           "fuse_evaluation": fuse}, node_tables)
    for rec in hist.rounds:
        m = {(x["node"], x["name"]): x["value"] for x in rec["metrics"]}
        assert ("H3", "c_index") not in m and m[("H3", "c_index_suppressed")] == 1.0
        assert ("H1", "c_index") in m and ("H2", "c_index") in m
        expected = (m[("H1", "c_index")] * m[("H1", "n_holdout")] + m[("H2", "c_index")] * m[("H2", "n_holdout")]) \
            / (m[("H1", "n_holdout")] + m[("H2", "n_holdout")])
        assert m[("global", "c_index")] == pytest.approx(expected)


def _equal_tables(node_tables):
    import pandas as pd

    pooled = pd.concat(node_tables.values(), ignore_index=True)
    pooled = pooled.iloc[:len(pooled) - len(pooled) % 3]
    return {f"E{i}": pooled.iloc[i::3].reset_index(drop=True) for i in range(3)}


def test_dp_without_noise_and_with_a_loose_bound_is_plain_fedavg(node_tables):
    tables = _equal_tables(node_tables)  # equal patient counts: equal weights = patient weights
    plain = run_in_process({**BASE, "min_nodes": 3}, tables)
    dp = run_in_process({**BASE, "min_nodes": 3, "dp_enabled": True, "dp_noise_multiplier": 0.0,
                         "dp_clip_norm": 1e6}, tables)
    for a, b in zip(plain.weights, dp.weights):
        np.testing.assert_array_equal(a, b)


def test_dp_clips_and_adds_seeded_noise(node_tables):
    tables = _equal_tables(node_tables)
    cfg = {**BASE, "min_nodes": 3, "dp_enabled": True, "dp_noise_multiplier": 1.0, "dp_clip_norm": 0.05}
    a = run_in_process(cfg, tables)
    b = run_in_process(cfg, tables)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x, y)  # same seed: same noise
    no_noise = run_in_process({**cfg, "dp_noise_multiplier": 0.0}, tables)
    from fl_engine.federation.core import initial_weights
    from fl_engine.features import Preprocessor

    c = parse_run_config(cfg)
    w0 = initial_weights(c, len(Preprocessor.from_dict(no_noise.preprocessor).output_names))
    # the average of updates clipped to C moves the model by at most C
    assert update_norm(w0, no_noise.weights) <= 0.05 + 1e-6
    # the noise moves it by about z*C/m per coordinate
    n_coords = sum(w.size for w in a.weights)
    diff = update_norm(no_noise.weights, a.weights)
    assert diff == pytest.approx(np.sqrt(n_coords) * 0.05 / 3, rel=0.2)
