import json

import numpy as np
import pandas as pd
import pytest

from generative import evaluate_gate, manager_pool, node_validate, validate_federation
from generative.safe import _bh, _hist_quantile
from generative.toy import toy_cohort


@pytest.fixture(scope="module")
def fresh(spec):
    """An independent sample of the same population: what a perfect generator would emit."""
    return toy_cohort(288, seed=99)


def test_pooled_fidelity_equals_validation_on_pooled_data(spec, nodes, fresh):
    fed = validate_federation(fresh, nodes, spec, parts=("fidelity",))
    pooled_train = pd.concat([tr for tr, _ in nodes], ignore_index=True)
    central = manager_pool([node_validate(fresh, pooled_train, None, spec, parts=("fidelity",))], fresh, spec)
    assert fed["csf"] == pytest.approx(central["csf"], abs=1e-12)
    assert fed["gsf"] == pytest.approx(central["gsf"], abs=1e-12)
    for k, v in central["tests"].items():
        np.testing.assert_allclose(fed["tests"][k], v, atol=1e-10, err_msg=k)


def test_node_report_holds_aggregates_only(spec, nodes, fresh):
    tr, ho = nodes[0]
    rep = node_validate(fresh, tr, ho, spec)

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        else:
            assert not isinstance(x, pd.DataFrame)
            if isinstance(x, np.ndarray):
                # no array has one entry per real patient
                assert x.ndim <= 2 and len(tr) not in x.shape and len(ho) not in x.shape

    walk(rep)


def test_scores_rank_good_above_bad_and_lie_in_unit_interval(spec, nodes, fresh):
    good = validate_federation(fresh, nodes, spec)
    # each column shuffled on its own: marginals intact, every association destroyed
    rng = np.random.default_rng(0)
    broken = fresh.apply(lambda c: c.to_numpy()[rng.permutation(len(c))])
    bad = validate_federation(broken, nodes, spec)
    for rep in (good, bad):
        assert 0 <= rep["csf"] <= 1 and 0 <= rep["gsf"] <= 1
        assert 0 <= rep["tstr_c_index"] <= 1
    assert good["gsf"] > bad["gsf"]
    assert good["tests"]["corr_distance:clinical"] < bad["tests"]["corr_distance:clinical"]
    assert good["tstr_c_index"] > bad["tstr_c_index"]
    assert good["csf"] > 0.85
    json.dumps(good)  # the pooled report is JSON-ready


def test_copies_of_real_patients_fail_the_gate_independent_sample_passes(spec, nodes, fresh):
    trains = pd.concat([tr for tr, _ in nodes], ignore_index=True)
    leak = validate_federation(trains, nodes, spec, parts=("privacy",))
    gate = evaluate_gate(leak)
    assert not gate["passed"]
    assert {"nndr_p5_ratio", "exact_copy_excess", "mia_auc"} <= set(gate["failed"])
    assert leak["privacy"]["synthetic_exact_copy_rate"] == pytest.approx(1.0)
    assert leak["privacy"]["mia_auc"] > 0.9
    ok = validate_federation(fresh, nodes, spec, parts=("privacy",))
    assert ok["privacy"]["synthetic_exact_copy_rate"] == 0
    assert ok["privacy"]["nndr_p5"] > 10 * leak["privacy"]["nndr_p5"]
    assert abs(ok["privacy"]["mia_auc"] - 0.5) < 0.15


def test_benjamini_hochberg_and_histogram_quantile():
    from scipy.stats import false_discovery_control

    p = np.array([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(_bh(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    q = np.random.default_rng(0).random(50) ** 3
    np.testing.assert_allclose(_bh(q), false_discovery_control(q, method="bh"))
    edges = np.linspace(0, 1, 11)
    hist = np.ones(10, dtype=int) * 10
    assert _hist_quantile(hist, edges, 0.05) == pytest.approx(0.05)


def test_validate_rejects_mismatched_synthetic(spec, nodes, fresh):
    from generative import SpecError

    with pytest.raises(SpecError, match="synthetic"):
        node_validate(fresh.drop(columns="TP53"), nodes[0][0], nodes[0][1], spec)
