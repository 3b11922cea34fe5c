"""Exact federated Cox (fl_engine.analytics.cox) against pooled fits (lifelines, scikit-survival),
its small-cell merging, its message kind and the "cox" model trained through the study loop."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fl_engine.analytics import cox
from fl_engine.datasets.iwgpm import load_iwgpm
from fl_engine.features import Preprocessor, survival_arrays
from fl_engine.federation import parse_run_config, run_in_process
from fl_engine.federation.core import NodeReply, NodeRequest, check_reply_privacy, split_holdout
from fl_engine.federation.privacy import NodeRefused
from fl_engine.federation.protocol import PROTOCOL
from fl_engine.models import build_model
from fl_engine.models.params import validate_params

lifelines = pytest.importorskip("lifelines")


def _data(n: int, p: int, seed: int, tied: bool = False):
    """Standardised x (ddof=1, so lifelines' own normalisation is the identity), months."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    x = (x - x.mean(0)) / x.std(0, ddof=1)
    beta = rng.normal(0, 0.4, p)
    t = rng.exponential(20 * np.exp(-x @ beta))
    c = rng.uniform(1, 60, n)
    d, e = np.minimum(t, c), (t <= c).astype(float)
    if tied:
        d = np.ceil(d)
    return x, d, e


def _split(x, d, e, fractions=(0.5, 0.3, 0.2)):
    cuts = np.round(np.cumsum(fractions)[:-1] * len(x)).astype(int)
    return [(a, b, c) for a, b, c in zip(np.split(x, cuts), np.split(d, cuts), np.split(e, cuts))]


def _lifelines(x, d, e, penalizer, strata=None):
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    df["T"], df["E"] = d, e
    if strata is not None:
        df["s"] = strata
    return lifelines.CoxPHFitter(penalizer=penalizer).fit(
        df, "T", "E", strata=["s"] if strata is not None else None, fit_options={"precision": 1e-12})


# --- the protocol's numerics against pooled fits -------------------------------------------------

@pytest.mark.parametrize("penalizer,seed", [(0.01, 0), (0.1, 1), (0.0, 2)])
def test_federated_fit_on_the_event_time_grid_equals_pooled_lifelines(penalizer, seed):
    x, d, e = _data(500, 5, seed)  # continuous times: Efron (lifelines) = Breslow
    ref = _lifelines(x, d, e, penalizer)
    fit = cox.fit_federated(_split(x, d, e), penalizer, edges=cox.event_time_grid(d, e))
    assert fit.converged
    np.testing.assert_allclose(fit.coef, ref.params_.to_numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.se, ref.standard_errors_.to_numpy(), atol=1e-6, rtol=0)
    assert fit.n == 500 and fit.n_events == int(e.sum())


def test_stratified_by_hospital_equals_lifelines_strata():
    x, d, e = _data(450, 4, 3)
    parts = _split(x, d, e)
    strata = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])
    ref = _lifelines(x, d, e, 0.05, strata=strata)
    fit = cox.fit_federated(parts, 0.05, stratified=True)
    np.testing.assert_allclose(fit.coef, ref.params_.to_numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.se, ref.standard_errors_.to_numpy(), atol=1e-6, rtol=0)
    unstratified = cox.fit_federated(parts, 0.05, edges=cox.event_time_grid(d, e))
    assert np.abs(unstratified.coef - fit.coef).max() > 1e-4  # the strata change the model


def test_tied_times_equal_scikit_survival_breslow():
    sksurv = pytest.importorskip("sksurv.linear_model")
    from sksurv.util import Surv  # scikit-survival is optional: imported only when installed

    x, d, e = _data(400, 4, 4, tied=True)
    assert len(np.unique(d[e > 0])) < e.sum() / 2  # many ties: Breslow is what is tested
    pen = 0.05
    ref = sksurv.CoxPHSurvivalAnalysis(alpha=pen * len(x), ties="breslow", tol=1e-12, n_iter=200).fit(
        x, Surv.from_arrays(e.astype(bool), d))
    fit = cox.fit_federated(_split(x, d, e), pen, edges=cox.event_time_grid(d, e))
    np.testing.assert_allclose(fit.coef, ref.coef_, atol=1e-6, rtol=0)


def test_gradient_and_hessian_are_the_derivatives_of_the_log_likelihood():
    x, d, e = _data(120, 3, 5, tied=True)
    beta = np.array([0.3, -0.2, 0.1])
    grid = cox.event_time_grid(d, e)

    def ll(b):
        return cox.newton_terms(cox.node_sums(x, d, e, b, grid), b)[0]

    _, g, h = cox.newton_terms(cox.node_sums(x, d, e, beta, grid), beta)
    eps = 1e-6
    num_g = np.array([(ll(beta + eps * u) - ll(beta - eps * u)) / (2 * eps) for u in np.eye(3)])
    np.testing.assert_allclose(g, num_g, rtol=1e-5, atol=1e-6)
    num_h = np.array([(cox.newton_terms(cox.node_sums(x, d, e, beta + eps * u, grid), beta + eps * u)[1]
                       - cox.newton_terms(cox.node_sums(x, d, e, beta - eps * u, grid), beta - eps * u)[1])
                      / (2 * eps) for u in np.eye(3)])
    np.testing.assert_allclose(h, num_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_summed_hospital_sums_equal_the_pooled_sums(seed):
    x, d, e = _data(200, 3, 10 + seed, tied=seed % 2 == 1)
    beta = np.random.default_rng(seed).normal(0, 0.5, 3)
    grid = cox.time_grid(1.0)
    pooled = cox.node_sums(x, d, e, beta, grid)
    summed = cox.add_sums([cox.node_sums(*part, beta, grid) for part in _split(x, d, e, (0.2, 0.5, 0.3))])
    k = len(pooled.events)
    for a, b in zip(pooled.to_arrays(), summed.to_arrays()):
        np.testing.assert_allclose(a, b[:len(a)] if a.shape[0] == k else b, rtol=1e-12, atol=1e-9)
    assert summed.n == pooled.n == 200


def test_a_monthly_grid_is_the_exact_fit_of_times_rounded_down_to_the_month():
    x, d, e = _data(400, 4, 6)
    parts = _split(x, d, e)
    monthly = cox.fit_federated(parts, 0.02, step_months=1.0)
    floored = cox.fit_federated([(a, np.floor(b), c) for a, b, c in parts], 0.02,
                                edges=cox.event_time_grid(np.floor(d), e))
    exact = cox.fit_federated(parts, 0.02, edges=cox.event_time_grid(d, e))
    np.testing.assert_allclose(monthly.coef, floored.coef, atol=1e-9)
    gap = np.abs(monthly.coef - exact.coef).max()
    assert 0 < gap < 0.1  # the grid coarsens the ties a little, no more


# --- small cells ----------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [5, 10, 25])
def test_small_cell_merging_leaves_no_reported_step_under_k_patients_or_events(k):
    x, d, e = _data(300, 3, 7)
    s = cox.node_sums(x, d, e, np.zeros(3), cox.time_grid(1.0), min_cell=k)
    at_risk = s.s0  # beta = 0: s0 counts the patients at risk at each grid time
    leaving = at_risk - np.append(at_risk[1:], 0.0)
    assert np.all((np.round(leaving) == 0) | (np.round(leaving) >= k)), leaving
    assert np.all((s.events == 0) | (s.events >= k))
    assert s.moved > 0 and s.events.sum() == e.sum()
    unmerged = cox.node_sums(x, d, e, np.zeros(3), cox.time_grid(1.0))
    assert unmerged.moved == 0
    assert np.any((unmerged.events > 0) & (unmerged.events < k))  # the raw grid had small cells


def test_a_hospital_with_fewer_patients_than_the_threshold_cannot_report():
    x, d, e = _data(8, 2, 8)
    with pytest.raises(ValueError, match="fewer than the small-cell threshold of 10"):
        cox.node_sums(x, d, e, np.zeros(2), cox.time_grid(1.0), min_cell=10)


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (lambda x, d, e: (np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x), d, e), "NaN"),
    (lambda x, d, e: (x, -d, e), "durations must be finite and >= 0"),
    (lambda x, d, e: (x, d, e * 2), "events must be 0"),
    (lambda x, d, e: (x, d[:-1], e), r"durations \(\d+,\)"),
])
def test_bad_inputs_are_refused_with_the_argument_named(change, message):
    x, d, e = _data(30, 2, 9)
    with pytest.raises(cox.CoxInputError, match=message):
        cox.node_sums(*change(x, d, e), np.zeros(2), cox.time_grid(1.0))


def test_grid_and_penalizer_are_checked():
    with pytest.raises(cox.CoxInputError, match="step must be a positive number of months"):
        cox.time_grid(0)
    with pytest.raises(cox.CoxInputError, match="penalizer"):
        cox.fit_federated(_split(*_data(30, 2, 9)), penalizer=-1)
    with pytest.raises(ValueError, match="penalizer"):
        validate_params("cox", {"penalizer": -0.5})
    with pytest.raises(ValueError, match="lr"):
        validate_params("cox", {"lr": 0.01})  # Newton steps have no learning rate


# --- the message kind ----------------------------------------------------------------------------

def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"patient_id": [f"P{seed}-{i}" for i in range(n)],
                       "age": rng.normal(70, 10, n), "hb": rng.normal(10, 2, n),
                       "bm_blast": rng.gamma(2, 3, n), "TP53": rng.integers(0, 2, n).astype(float),
                       "sex": rng.choice(["F", "M"], n)})
    risk = 0.04 * (df.age - 70) - 0.2 * (df.hb - 10) + 0.08 * df.bm_blast + 0.9 * df.TP53
    t = rng.exponential(40 * np.exp(-risk))
    c = rng.uniform(6, 120, n)
    df["os_months"] = np.ceil(np.minimum(t, c))  # whole months: the monthly grid is then exact
    df["os_event"] = (t <= c).astype(int)
    return df


def _config(**extra):
    params = extra.pop("model_params", {"penalizer": 0.02})
    return parse_run_config({"model": "cox", "model_params": json.dumps(params), "num_rounds": 8,
                             "min_nodes": 1, "features": "age,hb,bm_blast,TP53,sex",
                             "holdout_fraction": 0.2, **extra})


def _pooled_training(cfg, tables, preprocessor):
    pre = Preprocessor.from_dict(preprocessor)
    parts = []
    for name in sorted(tables):
        train, _ = split_holdout(tables[name], cfg.holdout_fraction, cfg.seed)
        d, e = survival_arrays(train, cfg.use_case, cfg.endpoint)
        parts.append((pre.transform(train).astype(np.float64), d, e))
    return parts


@pytest.mark.parametrize("stratified", [False, True])
def test_a_cox_study_trains_exactly_through_the_federation(stratified):
    tables = {"H1": _table(300, 1), "H2": _table(180, 2), "H3": _table(120, 3)}
    cfg = _config(model_params={"penalizer": 0.02, "stratified": stratified})
    hist = run_in_process(cfg, tables)
    parts = _pooled_training(cfg, tables, hist.preprocessor)
    if stratified:
        ref = cox.fit_federated(parts, 0.02, stratified=True)
    else:
        x, d, e = (np.concatenate([p[i] for p in parts]) for i in range(3))
        ref = cox.fit_federated([(x, d, e)], 0.02, edges=cox.event_time_grid(d, e))
    np.testing.assert_allclose(hist.weights[0], ref.coef, atol=1e-8)
    # C-index per round and per hospital, like the other models; the loss never rises
    for rec in hist.rounds:
        nodes = {m["node"] for m in rec["metrics"] if m["name"] == "c_index"}
        assert nodes == {"H1", "H2", "H3", "global"}
    loss = [next(m["value"] for m in r["metrics"] if m["node"] == "global" and m["name"] == "loss")
            for r in hist.rounds]
    assert all(b <= a + 1e-12 for a, b in zip(loss, loss[1:]))
    assert hist.baseline and hist.baseline["cumhaz"][-1] > 0
    model = hist.model(cfg)
    x0 = parts[0][0][:5]
    s = model.predict_survival(x0, np.array([6.0, 24.0]))
    assert np.all((s > 0) & (s <= 1)) and np.all(s[:, 1] <= s[:, 0])


def test_cox_replies_carry_only_sums_of_the_grid_and_are_checked():
    tables = {"H1": _table(200, 4)}
    cfg = _config(min_cell_count=5)
    pre = Preprocessor.fit("MDS", tables["H1"], ["age", "hb", "bm_blast", "TP53", "sex"]).to_dict()
    p = len(Preprocessor.from_dict(pre).output_names)
    req = NodeRequest("cox_sums", [np.zeros(p)], {"preprocessor": pre, "round": 1, "stratified": False,
                                                  "time_step_months": 1.0})
    reply = PROTOCOL.handle(tables["H1"], cfg, req, "H1")
    check_reply_privacy("cox_sums", reply, [(p,)], req)
    n_train = len(split_holdout(tables["H1"], cfg.holdout_fraction, cfg.seed)[0])
    assert reply.metrics["n_train"] == n_train and len(reply.arrays) == 5
    assert reply.arrays[0].sum() == reply.metrics["n_events"]
    assert np.all((reply.arrays[0] == 0) | (reply.arrays[0] >= 5))
    bad = [
        NodeReply("H1", arrays=reply.arrays + [np.zeros(3)], metrics=reply.metrics),  # an extra array
        NodeReply("H1", arrays=[reply.arrays[0] + 0.5] + reply.arrays[1:], metrics=reply.metrics),
        NodeReply("H1", arrays=[np.zeros(700), np.zeros(700), np.zeros((700, p)), np.zeros((700, p, p)),
                                np.zeros(p)], metrics=reply.metrics),  # longer than the grid
        NodeReply("H1", arrays=reply.arrays, metrics={**reply.metrics, "ids": [1, 2]}),
    ]
    for r in bad:
        with pytest.raises(ValueError):
            check_reply_privacy("cox_sums", r, [(p,)], req)


def test_a_small_hospital_refuses_the_stratified_sums():
    tables = {"H1": _table(30, 5)}
    cfg = _config(min_cell_count=25, model_params={"stratified": True})
    pre = Preprocessor.fit("MDS", tables["H1"], ["age", "hb", "bm_blast", "TP53", "sex"]).to_dict()
    p = len(Preprocessor.from_dict(pre).output_names)
    req = NodeRequest("cox_sums", [np.zeros(p)], {"preprocessor": pre, "round": 1, "stratified": True})
    with pytest.raises(NodeRefused, match="small-cell threshold of 25"):
        PROTOCOL.handle(tables["H1"], cfg, req, "H1")


def test_cox_with_differential_privacy_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="dp_enabled"):
        _config(dp_enabled=True)


def test_the_cox_model_fits_alone_like_the_federation_on_one_table():
    x, d, e = _data(300, 4, 11, tied=True)
    m = build_model("cox", 4, {"penalizer": 0.03})
    m.fit(x, d, e, epochs=50)
    ref = cox.fit_federated([(x, d, e)], 0.03, edges=cox.event_time_grid(d, e))
    np.testing.assert_allclose(m.get_weights()[0], ref.coef, atol=1e-8)
    with pytest.raises(ValueError, match="shape"):
        m.set_weights([np.zeros(3)])


def test_a_newton_step_that_lowers_the_objective_is_halved_back():
    # l(b) = -sqrt(1 + b^2): concave, but a full Newton step from b = 2 lands on -8 (worse)
    def terms(b):
        v = float(b[0])
        return -np.sqrt(1 + v * v), np.array([-v / np.sqrt(1 + v * v)]), np.array([[-(1 + v * v) ** -1.5]])

    state, b, accepted = cox.CoxNewton(tol=1e-10), np.array([2.0]), []
    for _ in range(60):
        ll, g, h = terms(b)
        nxt = state.step(b, ll, g, h)
        if state.halvings == 0:
            accepted.append(ll)
        if state.converged:
            break
        b = nxt
    assert state.converged and abs(b[0]) < 1e-8
    assert all(y >= x - 1e-12 for x, y in zip(accepted, accepted[1:]))  # accepted points only improve
    assert len(state.history) > len(accepted)  # some steps were halved back


SHARED_IWGPM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mds_iwgpm"


@pytest.mark.slow
def test_on_iwgpm_three_hospitals_equal_the_pooled_breslow_fit():
    if not (SHARED_IWGPM / "df_clinical.tsv").exists():
        pytest.skip(f"IWG-PM cohort not found at {SHARED_IWGPM} (needs ../shared/data)")
    sksurv = pytest.importorskip("sksurv.linear_model")
    from sksurv.util import Surv  # scikit-survival is optional: imported only when installed

    df = load_iwgpm(SHARED_IWGPM)
    df = df[df.os_months.notna() & df.os_event.isin([0, 1])].reset_index(drop=True)
    cols = ["age", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "TP53", "SF3B1", "ASXL1", "RUNX1"]
    x = Preprocessor.fit("MDS", df, cols).transform(df).astype(np.float64)
    d, e = df.os_months.to_numpy(float), df.os_event.to_numpy(float)
    assert len(np.unique(d[e > 0])) < e.sum()  # real tied times: Breslow's handling is tested
    ref = sksurv.CoxPHSurvivalAnalysis(alpha=0.01 * len(x), ties="breslow", tol=1e-12, n_iter=200).fit(
        x, Surv.from_arrays(e.astype(bool), d))
    fit = cox.fit_federated(_split(x, d, e, (0.6, 0.3, 0.1)), 0.01, edges=cox.event_time_grid(d, e))
    np.testing.assert_allclose(fit.coef, ref.coef_, atol=1e-6, rtol=0)
    monthly = cox.fit_federated(_split(x, d, e, (0.6, 0.3, 0.1)), 0.01, step_months=1.0, min_cell=10)
    assert monthly.moved > 0 and np.abs(monthly.coef - fit.coef).max() < 0.1


def test_a_cox_study_with_the_portals_privacy_defaults_and_comparison_phase():
    # min_patients_per_node 20 and min_cell_count 10 (the portal's strict defaults), comparison on
    tables = {"H1": _table(300, 21), "H2": _table(180, 22), "H3": _table(120, 23)}
    cfg = _config(min_patients_per_node=20, min_cell_count=10, comparison=True, fuse_evaluation=True)
    hist = run_in_process(cfg, tables)
    exact = run_in_process(_config(), tables)
    gap = np.abs(hist.weights[0] - exact.weights[0]).max()
    assert 0 < gap < 0.1  # merged small cells coarsen the grid a little, no more
    last = {(m["node"], m["name"]): m["value"] for m in hist.rounds[-1]["metrics"]}
    assert all(0 <= last[(n, "isolated_c_index")] <= 1 for n in ("H1", "H2", "H3"))
    assert {n for (n, name) in last if name == "c_index"} >= {"H1", "H2", "H3", "global"}
    assert len(hist.rounds) == cfg.num_rounds  # fused evaluation: every round still reported
