"""Harrell, Uno and Antolini concordance: properties and oracles (lifelines, sksurv, pycox)."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhaem_kernel.metrics import antolini_c, harrell_c, uno_c

from .conftest import make_cohort


def naive_harrell(t, e, r):
    """O(n^2) reference: comparable if t_i < t_j & e_i, or t_i == t_j & e_i & not e_j."""
    conc = comp = 0.0
    for i in range(len(t)):
        if not e[i]:
            continue
        for j in range(len(t)):
            if t[i] < t[j] or (t[i] == t[j] and not e[j] and i != j):
                comp += 1
                conc += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    return conc / comp if comp else float("nan")


cohorts = st.integers(min_value=2, max_value=40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 15), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.lists(st.integers(-5, 5), min_size=n, max_size=n),
))


@settings(max_examples=150, deadline=None)
@given(cohorts)
def test_harrell_matches_naive_definition_and_bounds(data):
    t, e, r = (np.array(a, dtype=float) for a in data)
    c = harrell_c(t, e, r)
    ref = naive_harrell(t, e, r)
    if np.isnan(ref):
        assert np.isnan(c)
    else:
        assert c == pytest.approx(ref, abs=1e-12)
        assert 0.0 <= c <= 1.0


@settings(max_examples=100, deadline=None)
@given(cohorts)
def test_harrell_invariant_under_strictly_monotone_transform(data):
    t, e, r = (np.array(a, dtype=float) for a in data)
    c = harrell_c(t, e, r)
    c2 = harrell_c(t, e, np.exp(r / 3.0) * 7 + r ** 3)
    assert (np.isnan(c) and np.isnan(c2)) or c == pytest.approx(c2, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 15), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.permutations(list(range(n))),
)))
def test_harrell_negated_risk_gives_one_minus_c_without_ties(data):
    t, e, r = (np.array(a, dtype=float) for a in data)
    c = harrell_c(t, e, r)
    if not np.isnan(c):
        assert harrell_c(t, e, -r) == pytest.approx(1.0 - c, abs=1e-12)


def test_harrell_matches_lifelines_and_sksurv_with_ties():
    from lifelines.utils import concordance_index
    from sksurv.metrics import concordance_index_censored
    t, e, r, _ = make_cohort(800, seed=1, tied=True)
    c = harrell_c(t, e, r)
    assert c == pytest.approx(concordance_index(t, -r, e), abs=1e-12)  # lifelines: survival times
    assert c == pytest.approx(concordance_index_censored(e.astype(bool), t, r)[0], abs=1e-12)
    assert c > 0.6  # the risk carries signal: a sign error would show


def test_harrell_rejects_bad_input_naming_it():
    with pytest.raises(ValueError, match=r"events\[1\]"):
        harrell_c([1, 2], [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="risk has 1 values"):
        harrell_c([1, 2], [1, 0], [0.1])
    with pytest.raises(ValueError, match=r"risk\[0\] is not finite"):
        harrell_c([1, 2], [1, 0], [np.nan, 0.2])
    assert np.isnan(harrell_c([1, 2], [0, 0], [0.1, 0.2]))


@pytest.mark.parametrize("tau_q", [None, 0.6, 0.9])
def test_uno_matches_sksurv(tau_q):
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv
    t, e, r, _ = make_cohort(600, seed=2, tied=True)
    t_tr, e_tr, _, _ = make_cohort(900, seed=3, tied=True)
    t_tr = np.r_[t_tr, t.max() + 1]  # the training follow-up must cover the test times
    e_tr = np.r_[e_tr, 0]
    tau = None if tau_q is None else float(np.quantile(t, tau_q))
    ours = uno_c(t, e, r, tau=tau, train_durations=t_tr, train_events=e_tr)
    ref = concordance_index_ipcw(Surv.from_arrays(e_tr.astype(bool), t_tr),
                                 Surv.from_arrays(e.astype(bool), t), r, tau=tau)[0]
    assert ours == pytest.approx(ref, abs=1e-10)
    assert uno_c(t, e, -r, tau=tau, train_durations=t_tr, train_events=e_tr) < 0.5 < ours


def test_uno_without_censoring_equals_harrell():
    t, _, r, _ = make_cohort(300, seed=4, tied=False)
    e = np.ones_like(t)
    assert uno_c(t, e, r) == pytest.approx(harrell_c(t, e, r), abs=1e-12)


def _exp_surv(x, grid, rate=0.05):
    """(n_times, n) survival of an exponential model with hazard rate * exp(0.7 x)."""
    return np.exp(-np.outer(grid, rate * np.exp(0.7 * x)))


def test_antolini_matches_pycox_antolini():
    from pycox.evaluation import EvalSurv
    t, e, _, x = make_cohort(500, seed=5, tied=True)
    grid = np.arange(0.0, t.max() + 1)
    surv = np.round(_exp_surv(x, grid), 2)  # rounded: ties in predicted survival too
    ours = antolini_c(t, e, surv, grid)
    ref = EvalSurv(pd.DataFrame(surv, index=grid), t, e.astype(int)).concordance_td("antolini")
    assert ours == pytest.approx(ref, abs=1e-12)
    assert 0.5 < ours <= 1.0  # no credit for tied survival: below Harrell here


def test_antolini_with_proportional_hazards_equals_harrell_without_ties():
    # with one crossing-free curve family and no ties, S_i(t_i) < S_j(t_i) iff risk_i > risk_j
    t, e, _, x = make_cohort(300, seed=6, tied=False)
    grid = np.unique(np.r_[0.0, t])
    assert antolini_c(t, e, _exp_surv(x, grid), grid) == pytest.approx(harrell_c(t, e, x),
                                                                       abs=1e-12)


def test_antolini_small_blocks_agree_and_shape_is_checked():
    t, e, _, x = make_cohort(200, seed=7)
    grid = np.linspace(0, t.max(), 50)
    s = _exp_surv(x, grid)
    assert antolini_c(t, e, s, grid, block=7) == pytest.approx(antolini_c(t, e, s, grid))
    with pytest.raises(ValueError, match="pass surv.T"):
        antolini_c(t, e, s.T, grid)


@pytest.mark.realdata
def test_oracles_on_gbsg_benchmark(gbsg):
    """Cox model fitted on half of GBSG; evaluated on the other half against three libraries."""
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index
    from pycox.evaluation import EvalSurv
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv
    df = gbsg.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, test = df.iloc[: len(df) // 2], df.iloc[len(df) // 2:]
    cph = CoxPHFitter(penalizer=0.01).fit(train, "time", "event")
    risk = cph.predict_partial_hazard(test).to_numpy()
    t, e = test["time"].to_numpy(float), test["event"].to_numpy(int)
    c = harrell_c(t, e, risk)
    assert c == pytest.approx(concordance_index(t, -risk, e), abs=1e-12)
    assert 0.6 < c < 0.75  # published CoxPH C on GBSG is about 0.66
    grid = np.unique(np.r_[0.0, df["time"].to_numpy(float)])
    surv = cph.predict_survival_function(test, times=grid).to_numpy()  # (n_times, n)
    ev = EvalSurv(pd.DataFrame(surv, index=grid), t, e)
    assert antolini_c(t, e, surv, grid) == pytest.approx(ev.concordance_td("antolini"), abs=1e-12)
    tau = float(np.quantile(t, 0.8))
    y_tr = Surv.from_arrays(train["event"].astype(bool), train["time"].astype(float))
    ours = uno_c(t, e, risk, tau=tau, train_durations=train["time"], train_events=train["event"])
    ref = concordance_index_ipcw(y_tr, Surv.from_arrays(e.astype(bool), t), risk, tau=tau)[0]
    assert ours == pytest.approx(ref, abs=1e-10)
