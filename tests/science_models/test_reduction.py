import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from fl_engine.reduction import (PCAReduction, embedding_columns, merge_pca_stats, pca_stats,
                                 reduce_embeddings)
from fedhaem_kernel.schema import MDS


def _low_rank(n, p=40, rank=3, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((p, rank)))
    scores = rng.standard_normal((n, rank)) * np.array([5.0, 3.0, 2.0][:rank])
    return scores @ basis.T + 1.5 + noise * rng.standard_normal((n, p)), basis


def test_federated_pca_equals_pooled():
    x, _ = _low_rank(600)
    parts = [x[:360], x[360:540], x[540:]]
    fed = PCAReduction.from_stats(merge_pca_stats([pca_stats(p) for p in parts]), k=3)
    pooled = PCAReduction.fit(x, k=3)
    np.testing.assert_allclose(fed.components, pooled.components, atol=1e-8)
    np.testing.assert_allclose(fed.explained_variance, pooled.explained_variance, rtol=1e-8)
    np.testing.assert_allclose(fed.transform(x), pooled.transform(x), atol=1e-7)
    # and pooled equals an SVD of the centred data
    xc = x - x.mean(0)
    _, sv, _ = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(pooled.explained_variance, sv[:3] ** 2 / (len(x) - 1), rtol=1e-8)


def test_recovers_known_subspace():
    x, basis = _low_rank(500)
    red = PCAReduction.fit(x, k=3)
    assert red.explained_ratio.sum() > 0.95
    # principal angles between the recovered and the true subspace are ~0
    cosines = np.linalg.svd(red.components @ basis, compute_uv=False)
    assert cosines.min() > 0.99


def test_per_node_fit_is_close_but_not_identical():
    x, basis = _low_rank(600)
    node = PCAReduction.fit(x[:60], k=3)
    cosines = np.linalg.svd(node.components @ basis, compute_uv=False)
    assert cosines.min() > 0.95


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000))
def test_merge_is_order_free_and_exact(n_parts, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20 * n_parts, 5))
    parts = np.array_split(x, n_parts)
    a = merge_pca_stats([pca_stats(p, min_rows=1) for p in parts])
    b = merge_pca_stats([pca_stats(p, min_rows=1) for p in reversed(parts)])
    full = pca_stats(x)
    for m in (a, b):
        assert m["n"] == full["n"]
        np.testing.assert_allclose(m["sum"], full["sum"], atol=1e-9)
        np.testing.assert_allclose(m["cross"], full["cross"], atol=1e-9)


def test_small_nodes_refuse_and_nan_rows():
    x, _ = _low_rank(50, p=8)
    with pytest.raises(ValueError, match="min_rows"):
        pca_stats(x[:5])
    x[0, 3] = np.nan
    assert pca_stats(x)["n"] == 49
    red = PCAReduction.fit(x, 2)
    assert np.isnan(red.transform(x[:1])).all()


def test_reduce_embeddings_keeps_schema_names():
    x, _ = _low_rank(100, p=12)
    df = pd.DataFrame(x, columns=[f"wsi_{i}" for i in range(12)]).assign(age=70.0)
    red = PCAReduction.fit(df[embedding_columns(df, MDS, "wsi")].to_numpy(), k=3)
    out = reduce_embeddings(df, MDS, "wsi", red)
    assert [c for c in out if c.startswith("wsi_")] == ["wsi_0", "wsi_1", "wsi_2"]
    assert "age" in out
    back = PCAReduction.from_dict(red.to_dict())
    np.testing.assert_allclose(back.transform(x), red.transform(x))
