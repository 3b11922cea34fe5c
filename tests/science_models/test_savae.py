import numpy as np
import pytest
import torch

from fl_engine.cohort import generate_mds_cohort
from fl_engine.features import Preprocessor
from fedhaem_kernel.metrics.concordance import harrell_c
from fl_engine.models.base import SurvivalModel
from fl_engine.models.savae import SAVAE, column_kinds_from_preprocessor


def _weibull_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[:, 3] = (x[:, 3] > 0).astype(np.float32)
    lp = 0.9 * x[:, 0] - 0.6 * x[:, 3]
    t = 12.0 * (rng.exponential(size=n) / np.exp(lp)) ** (1 / 1.3)
    c = rng.uniform(2, 40, n)
    return x, np.minimum(t, c).astype(np.float32), (t <= c).astype(np.float32)


def test_protocol_and_weight_roundtrip():
    m = SAVAE(4, time_scale=12.0)
    assert isinstance(m, SurvivalModel)
    w = m.get_weights()
    m2 = SAVAE(4, time_scale=12.0, seed=5)
    m2.set_weights(w)
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    np.testing.assert_allclose(m.predict_risk(x), m2.predict_risk(x))
    with pytest.raises(ValueError, match="expected"):
        m2.set_weights(w[:-1])


def test_learns_risk_ordering_and_survival_is_monotone():
    x, d, e = _weibull_data()
    m = SAVAE(4, time_scale=12.0)
    info = m.fit(x[:300], d[:300], e[:300], epochs=200, seed=0)
    assert np.isfinite(info["loss"]) and info["epochs"] >= 1
    c = harrell_c(d[300:], e[300:], m.predict_risk(x[300:]))
    oracle = harrell_c(d[300:], e[300:], 0.9 * x[300:, 0] - 0.6 * x[300:, 3])
    assert c > oracle - 0.06
    s = m.predict_survival(x[300:], np.array([0.0, 3.0, 12.0, 36.0]))
    assert s.shape == (100, 4)
    assert np.all(np.diff(s, axis=1) <= 1e-9) and np.allclose(s[:, 0], 1.0)
    # risk is the Weibull CDF at the horizon
    np.testing.assert_allclose(m.predict_risk(x[:5]), 1 - m.predict_survival(x[:5], np.array([12.0]))[:, 0])


def test_nan_inputs_are_masked_not_fatal():
    x, d, e = _weibull_data(200)
    x[::7, 1] = np.nan
    m = SAVAE(4, time_scale=12.0)
    info = m.fit(x, d, e, epochs=3, seed=1)
    assert np.isfinite(info["loss"])
    assert np.isfinite(m.predict_risk(x)).all()
    assert m.column_kinds == ["gaussian", "gaussian", "gaussian", "bernoulli"]


def test_deterministic_for_a_seed():
    x, d, e = _weibull_data(200)
    a, b = SAVAE(4, time_scale=12.0), SAVAE(4, time_scale=12.0)
    a.fit(x, d, e, epochs=3, seed=2)
    b.fit(x, d, e, epochs=3, seed=2)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_kinds_from_preprocessor():
    df = generate_mds_cohort(300, seed=1)
    cols = ["age", "sex", "hb", "cyto_ipssr", "TP53"]
    pre = Preprocessor.fit("MDS", df, cols)
    params = column_kinds_from_preprocessor(pre)
    names = pre.output_names
    kinds = dict(zip(names, params["column_kinds"]))
    assert kinds["age"] == "gaussian" and kinds["TP53"] == "bernoulli"
    assert kinds["cyto_ipssr=Good"] == "categorical:cyto_ipssr"
    assert kinds["hb__missing"] == "bernoulli"
    assert params["missing_of"][names.index("hb")] == names.index("hb__missing")
    x = pre.transform(df)
    # centred binary columns split exactly at their threshold
    j = names.index("TP53")
    obs = df.TP53.notna().to_numpy()
    assert ((x[obs, j] > params["binary_thresholds"][j]) == (df.TP53[obs] == 1)).all()
    m = SAVAE(x.shape[1], time_scale=24.0, **params)
    assert np.isfinite(m.fit(x, df.os_months.to_numpy(), df.os_event.to_numpy(), epochs=2)["loss"])


def test_bad_kinds_rejected():
    with pytest.raises(ValueError, match="column_kinds"):
        SAVAE(2, column_kinds=["gaussian"])
    with pytest.raises(ValueError, match="column_kinds\\[1\\]"):
        SAVAE(2, column_kinds=["gaussian", "poisson"])


def test_loss_weights_scale_kl_and_covariate_terms_only():
    x, d, e = _weibull_data(120)
    base = SAVAE(4, time_scale=12.0, covariate_weight=1.0, kl_weight=1.0)
    base.fit(x, d, e, epochs=1, seed=0)

    def loss(w, b):
        m = SAVAE(4, time_scale=12.0, column_kinds=base.column_kinds, covariate_weight=w, kl_weight=b)
        m.set_weights(base.get_weights())
        m.net.eval()
        with torch.no_grad():
            return float(m._loss(*m._tensors(x, d, e), sample=False))

    time_only = loss(0.0, 0.0)
    cov, kl = loss(1.0, 0.0) - time_only, loss(0.0, 1.0) - time_only
    assert cov > 0 and kl > 0
    assert loss(1.0, 1.0) == pytest.approx(time_only + cov + kl, rel=1e-5)
    assert loss(0.2, 0.2) == pytest.approx(time_only + 0.2 * (cov + kl), rel=1e-5)


def test_default_loss_weights_and_bad_weights_rejected():
    m = SAVAE(4, time_scale=12.0)
    assert (m.covariate_weight, m.kl_weight) == (0.2, 0.2)
    for name in ("covariate_weight", "kl_weight"):
        with pytest.raises(ValueError, match=name):
            SAVAE(4, **{name: -0.1})


def test_explicit_validation_rows_drive_early_stopping():
    # With `validation` given, the kept weights are those with the lowest loss on exactly those
    # rows (recomputed here), and a bad validation triple is refused like training data.
    x, d, e = _weibull_data(300, seed=3)
    m = SAVAE(4, time_scale=12.0, val_fraction=0.5, patience=5)
    info = m.fit(x[:200], d[:200], e[:200], epochs=40, seed=1, validation=(x[200:], d[200:], e[200:]))
    xt, ot, tt, et = m._tensors(x[200:], d[200:], e[200:])
    with torch.no_grad():
        recomputed = float(m._loss(xt, ot, tt, et, sample=False))
    assert info["val_loss"] == pytest.approx(recomputed, rel=1e-5)
    other = m._tensors(x[:100], d[:100], e[:100])
    with torch.no_grad():
        assert float(m._loss(*other, sample=False)) != pytest.approx(recomputed, rel=1e-5)
    with pytest.raises(ValueError, match="durations"):
        SAVAE(4).fit(x[:50], d[:50], e[:50], epochs=1, validation=(x[:5], -d[:5], e[:5]))
