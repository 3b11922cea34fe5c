import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from generative.aggregation import MessageError, sum_counts, weighted_fedavg

floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(a=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 5)), elements=floats),
       b=arrays(np.float64, st.integers(1, 6), elements=st.floats(-1e3, 1e3)),
       w=st.lists(st.floats(0.01, 1e4), min_size=1, max_size=5))
def test_fedavg_of_identical_models_returns_the_model(a, b, w):
    model = {"layer.weight": a, "layer.bias": b, "bn.count": np.array(7, dtype=np.int64)}
    out = weighted_fedavg([{k: v.copy() for k, v in model.items()} for _ in w], w)
    for k in model:
        assert out[k].dtype == model[k].dtype
        np.testing.assert_array_equal(out[k], model[k])


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float64, 3, elements=st.floats(-100, 100)), y=arrays(np.float64, 3, elements=st.floats(-100, 100)),
       wx=st.floats(0.1, 100), wy=st.floats(0.1, 100))
def test_fedavg_is_the_patient_weighted_mean(x, y, wx, wy):
    out = weighted_fedavg([{"p": x}, {"p": y}], [wx, wy])["p"]
    np.testing.assert_allclose(out, (wx * x + wy * y) / (wx + wy), rtol=1e-9, atol=1e-9)


def test_fedavg_rejects_mismatched_messages():
    with pytest.raises(MessageError, match="shape"):
        weighted_fedavg([{"p": np.zeros(2)}, {"p": np.zeros(3)}], [1, 1])
    with pytest.raises(MessageError, match="keys"):
        weighted_fedavg([{"p": np.zeros(2)}, {"q": np.zeros(2)}], [1, 1])
    with pytest.raises(MessageError, match="weights"):
        weighted_fedavg([{"p": np.zeros(2)}], [0])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(20, 120), k=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_federated_counts_equal_pooled_counts(n, k, seed):
    """Family counts and column-summary counts summed over nodes equal the pooled counts."""
    from generative.backends.bayesnet import family_counts
    from generative.transform import node_column_summaries
    from generative.toy import toy_cohort, toy_spec

    spec = toy_spec()
    df = spec.validate(toy_cohort(n, seed=seed))
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(k - 1, n - 1), replace=False)) if k > 1 else []
    parts = [p for p in np.split(np.arange(n), cuts) if len(p)]
    codes = pd.DataFrame({c: df[c] for c in ("SF3B1", "U2AF1", "ASXL1", "SRSF2", "os_event", "del5q")})
    card = {c: 2 for c in codes}
    edges = [["ASXL1", "SRSF2"], ["SF3B1", "U2AF1"], ["SRSF2", "os_event"], ["U2AF1", "os_event"]]
    fed = sum_counts([family_counts(codes.iloc[p], edges, card) for p in parts])
    pooled = family_counts(codes, edges, card)
    for v in pooled:
        np.testing.assert_array_equal(fed[v], pooled[v])
    # column summaries (discrete part of the spec: numeric ones also fit a mixture, slow here)
    from generative.spec import TableSpec

    dspec = TableSpec(tuple(spec.of_kind("binary", "categorical")))
    summ = [node_column_summaries(df.iloc[p], dspec) for p in parts]
    whole = node_column_summaries(df, dspec)
    for c in dspec.columns:
        tot = sum(s["columns"][c.name]["counts"] for s in summ)
        np.testing.assert_array_equal(tot, whole["columns"][c.name]["counts"])
