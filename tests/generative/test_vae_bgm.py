"""VAE-BGM decoder parts: autoregressive binary decoder, marginal calibration, point-mass heads."""
import numpy as np
import pandas as pd
import pytest
import torch

from generative import make_generator
from generative.federated import federated_summary

FAST = {"epochs": 3, "hidden": 32, "latent": 4}


def test_vae_binary_decoder_is_autoregressive_in_column_order(spec, cohort):
    """Column k's logit depends on binary columns before k only (a change of x_j, j >= k,
    leaves it unchanged), so ancestral sampling column by column is exact."""
    g = make_generator("vae_bgm", spec, seed=0, binary_ar=True, **FAST).fit(cohort)
    with torch.no_grad():
        g.net.ar.copy_(torch.randn_like(g.net.ar))  # every weight non-zero, incl. the masked ones
        nb = len(g.bin_idx)
        base = torch.randn(5, nb)
        xb = (torch.rand(5, nb) < 0.5).float()
        ref = g.net.binary_logits(base, xb)
        for k in range(nb):
            flipped = xb.clone()
            flipped[:, k:] = 1 - flipped[:, k:]
            out = g.net.binary_logits(base, flipped)
            torch.testing.assert_close(out[:, :k + 1], ref[:, :k + 1])
            if k + 1 < nb:
                assert not torch.allclose(out[:, k + 1:], ref[:, k + 1:])


def test_vae_calibrated_binary_frequencies_match_the_federation(spec, nodes):
    """With calibrate_binary, each binary column's sampled frequency equals the global summary's
    (pooled) frequency up to Monte-Carlo error, even for a barely trained model."""
    trains = [tr for tr, _ in nodes]
    summary = federated_summary(trains, spec)
    pooled = pd.concat(trains, ignore_index=True)
    kw = dict(FAST, binary_ar=True, summary=summary)
    cal = make_generator("vae_bgm", spec, seed=0, calibrate_binary=True, **kw).fit(pooled)
    raw = make_generator("vae_bgm", spec, seed=0, calibrate_binary=False, **kw).fit(pooled)
    binary = [c.name for c in spec.of_kind("binary")]
    real = pooled[binary].mean()
    err_cal = (cal.sample(20000, seed=1)[binary].mean() - real).abs()
    err_raw = (raw.sample(20000, seed=1)[binary].mean() - real).abs()
    assert err_cal.max() < 0.015, err_cal.to_dict()
    assert err_cal.sum() < err_raw.sum()


def test_vae_point_mass_head_reproduces_the_share_at_the_minimum(spec, cohort):
    """A numeric column with >= 10 % of patients at its minimum gets a Bernoulli head: the
    sampled share at the minimum follows the data; values above it stay above it."""
    df = cohort.copy()
    rng = np.random.default_rng(3)
    zero = rng.random(len(df)) < 0.6
    df.loc[zero, "bm_blast"] = 0.0
    df.loc[~zero, "bm_blast"] = df.loc[~zero, "bm_blast"].clip(lower=0.5)
    g = make_generator("vae_bgm", spec, seed=0, point_mass=True, epochs=30, hidden=32, latent=4).fit(df)
    assert [g.num_spans[j].column for j in g.pm_cols] == ["bm_blast"]
    s = g.sample(4000, seed=2)
    assert abs((s["bm_blast"] == 0).mean() - 0.6) < 0.08
    off = make_generator("vae_bgm", spec, seed=0, point_mass=False, epochs=30, hidden=32, latent=4).fit(df)
    assert off.pm_cols == []
    # one Gaussian smears the point mass: its share at exactly 0 is further from the data
    assert abs((off.sample(4000, seed=2)["bm_blast"] == 0).mean() - 0.6) > abs((s["bm_blast"] == 0).mean() - 0.6)


@pytest.mark.parametrize("opts", [{}, {"binary_ar": False, "calibrate_binary": False, "point_mass": False}])
def test_vae_parameters_and_mixture_round_trip_with_options(spec, cohort, opts):
    """Another generator built from the same summary, given the weights and the mixture,
    samples exactly the same rows (calibration offsets are recomputed, not shipped)."""
    g = make_generator("vae_bgm", spec, seed=0, **FAST, **opts).fit(cohort)
    h = make_generator("vae_bgm", spec, seed=0, summary=g.summary, **FAST, **opts)
    h.set_parameters(g.get_parameters())
    h.set_mixture(g.mixture)
    pd.testing.assert_frame_equal(h.sample(200, seed=4), g.sample(200, seed=4))
