"""Brier / integrated Brier (sksurv, pycox), Kaplan-Meier and log-rank (lifelines), bootstrap."""
import numpy as np
import pandas as pd
import pytest
import scipy.integrate
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhaem_kernel.metrics import (bootstrap_ci, brier_score, harrell_c, integrated_brier_score,
                                    kaplan_meier, logrank_test)

from .conftest import make_cohort


def _exp_surv(x, grid, rate=0.05):
    return np.exp(-np.outer(grid, rate * np.exp(0.7 * x)))


def test_brier_graf_matches_sksurv_with_separate_censoring_set():
    from sksurv.metrics import brier_score as sk_brier
    from sksurv.metrics import integrated_brier_score as sk_ibs
    from sksurv.util import Surv
    t, e, _, x = make_cohort(400, seed=11, tied=True)
    t_tr, e_tr, _, _ = make_cohort(700, seed=12, tied=True)
    t_tr, e_tr = np.r_[t_tr, t.max() + 5], np.r_[e_tr, 0]
    times = np.linspace(np.quantile(t, 0.05), np.quantile(t, 0.9), 25)
    surv = _exp_surv(x, times)  # (n_times, n)
    y, y_tr = Surv.from_arrays(e.astype(bool), t), Surv.from_arrays(e_tr.astype(bool), t_tr)
    ours = brier_score(t, e, surv, times, censor_durations=t_tr, censor_events=e_tr)
    np.testing.assert_allclose(ours, sk_brier(y_tr, y, surv.T, times)[1], atol=1e-12)
    ibs = integrated_brier_score(t, e, surv, times, censor_durations=t_tr, censor_events=e_tr)
    assert ibs == pytest.approx(sk_ibs(y_tr, y, surv.T, times), abs=1e-12)


def test_brier_pycox_convention_matches_evalsurv(monkeypatch):
    from pycox.evaluation import EvalSurv
    # pycox 0.3 still calls scipy.integrate.simps, removed in scipy 1.14: give the oracle its
    # renamed function (the same Simpson rule)
    monkeypatch.setattr(scipy.integrate, "simps", scipy.integrate.simpson, raising=False)
    t, e, _, x = make_cohort(500, seed=13, tied=True)
    grid = np.arange(0.0, t.max() + 1)
    surv = _exp_surv(x, grid)
    ev = EvalSurv(pd.DataFrame(surv, index=grid), t, e, censor_surv="km")
    ts = np.linspace(1, np.quantile(t, 0.9), 30)
    np.testing.assert_allclose(brier_score(t, e, surv, grid, ts, estimator="pycox"),
                               ev.brier_score(ts).to_numpy(), atol=1e-12)
    assert integrated_brier_score(t, e, surv, grid, ts, estimator="pycox") == pytest.approx(
        ev.integrated_brier_score(ts), abs=1e-12)


def test_brier_rewards_the_true_model_over_a_flat_one():
    t, e, _, x = make_cohort(600, seed=14, tied=False)
    grid = np.linspace(0, np.quantile(t, 0.8), 40)
    good = integrated_brier_score(t, e, _exp_surv(x, grid), grid)
    flat = integrated_brier_score(t, e, np.full((grid.size, t.size), 0.5), grid)
    assert good < flat


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 30).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 12), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.lists(st.floats(0, 1), min_size=n, max_size=n),
)), st.sampled_from(["graf", "pycox"]))
def test_brier_is_non_negative(data, estimator):
    t, e, p = (np.array(a, dtype=float) for a in data)
    grid = np.arange(0.0, 13.0)
    surv = np.clip(np.outer(np.linspace(1, 0.2, grid.size), p), 0, 1)
    bs = brier_score(t, e, surv, grid, estimator=estimator)
    assert np.all(bs[np.isfinite(bs)] >= 0)


def test_brier_shape_and_estimator_are_checked():
    t, e, _, x = make_cohort(50, seed=15)
    grid = np.linspace(0, 10, 5)
    with pytest.raises(ValueError, match="n_times, n_patients"):
        brier_score(t, e, _exp_surv(x, grid).T, grid)
    with pytest.raises(ValueError, match="estimator"):
        brier_score(t, e, _exp_surv(x, grid), grid, estimator="other")


def test_kaplan_meier_matches_lifelines():
    from lifelines import KaplanMeierFitter
    t, e, _, _ = make_cohort(300, seed=16, tied=True)
    times, surv = kaplan_meier(t, e)
    km = KaplanMeierFitter().fit(t, e)
    np.testing.assert_allclose(times, km.survival_function_.index.to_numpy())
    np.testing.assert_allclose(surv, km.survival_function_.to_numpy().ravel(), atol=1e-12)
    assert np.all(np.diff(surv) <= 0) and surv[0] <= 1.0


@pytest.mark.parametrize("k", [2, 3])
def test_logrank_matches_lifelines(k):
    from lifelines.statistics import multivariate_logrank_test
    t, e, _, x = make_cohort(400, seed=17, tied=True)
    groups = np.digitize(x, np.quantile(x, np.linspace(0, 1, k + 1)[1:-1]))
    ours = logrank_test(t, e, groups)
    ref = multivariate_logrank_test(t, groups, e)
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-6)
    assert ours.df == k - 1 and ours.p_value < 0.01  # groups split by the true risk differ


def test_logrank_identical_groups_give_no_evidence():
    t, e, _, _ = make_cohort(200, seed=18)
    res = logrank_test(np.r_[t, t], np.r_[e, e], np.r_[np.zeros(200), np.ones(200)])
    assert res.statistic == pytest.approx(0.0, abs=1e-9) and res.p_value == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_brackets_the_point():
    t, e, r, _ = make_cohort(300, seed=19)
    a = bootstrap_ci(harrell_c, t, e, r, n_boot=200, seed=3)
    b = bootstrap_ci(harrell_c, t, e, r, n_boot=200, seed=3)
    c = bootstrap_ci(harrell_c, t, e, r, n_boot=200, seed=4)
    assert a == b and a != c
    point, lower, upper = a
    assert point == harrell_c(t, e, r)
    assert lower < point < upper and upper - lower < 0.15


def test_bootstrap_resamples_a_survival_matrix_by_patient():
    from fedhaem_kernel.metrics import antolini_c
    t, e, _, x = make_cohort(150, seed=20)
    grid = np.linspace(0, t.max(), 30)
    surv = _exp_surv(x, grid)
    res = bootstrap_ci(lambda tt, ee, ss: antolini_c(tt, ee, ss.T, grid), t, e, surv.T, n_boot=50)
    assert res.lower <= res.point <= res.upper


def test_bootstrap_drops_nan_resamples_and_checks_lengths():
    t = np.array([1.0, 2, 3, 4]); e = np.array([1, 0, 0, 0]); r = np.array([4.0, 3, 2, 1])
    res = bootstrap_ci(harrell_c, t, e, r, n_boot=100, seed=0)  # some resamples lack the event
    assert res.point == 1.0 and res.lower == 1.0 and res.upper == 1.0
    with pytest.raises(ValueError, match="array 1 has 3 rows"):
        bootstrap_ci(harrell_c, t, e[:3], r)
