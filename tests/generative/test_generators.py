import numpy as np
import pandas as pd
import pytest

from generative import NotFittedError, SpecError, make_generator, train_federated

FAST = {"ctgan": {"epochs": 2, "batch_size": 100, "gen_dims": (32, 32), "dis_dims": (32, 32), "z_dim": 16},
        "vae_bgm": {"epochs": 3, "hidden": 32, "latent": 4},
        "bayesian_network": {"max_indegree": 1}}


@pytest.mark.parametrize("kind", ["ctgan", "vae_bgm", "bayesian_network"])
def test_fit_sample_types_and_ranges(kind, spec, cohort):
    g = make_generator(kind, spec, seed=0, **FAST[kind]).fit(cohort)
    s = g.sample(300, seed=1)
    assert list(s.columns) == spec.names and len(s) == 300
    for c in spec.of_kind("numeric"):
        assert s[c.name].between(cohort[c.name].min(), cohort[c.name].max()).all(), c.name
    for c in spec.of_kind("binary"):
        assert set(np.unique(s[c.name])) <= {0, 1}
    assert set(s["cyto_ipssr"]) <= set(spec.column("cyto_ipssr").categories)
    assert (s["age"] == s["age"].round()).all()  # integer column
    pd.testing.assert_frame_equal(g.sample(50, seed=2), g.sample(50, seed=2))


@pytest.mark.parametrize("kind", ["ctgan", "vae_bgm"])
def test_parameters_round_trip(kind, spec, cohort):
    g = make_generator(kind, spec, seed=0, **FAST[kind]).fit(cohort)
    h = make_generator(kind, spec, seed=0, summary=g.summary, **FAST[kind])
    h.set_parameters(g.get_parameters())
    if kind == "vae_bgm":
        h.set_mixture(g.mixture)
    pd.testing.assert_frame_equal(h.sample(100, seed=4), g.sample(100, seed=4))


def test_fit_rejects_bad_input(spec, cohort):
    g = make_generator("vae_bgm", spec, **FAST["vae_bgm"])
    with pytest.raises(NotFittedError):
        g.sample(10)
    bad = cohort.copy()
    bad.loc[2, "plt"] = "many"
    with pytest.raises(SpecError, match=r"column 'plt', row 2"):
        g.fit(bad)
    with pytest.raises(ValueError, match="unknown generator"):
        make_generator("gan9000", spec)


@pytest.mark.parametrize("kind", ["ctgan", "vae_bgm"])
def test_federated_rounds_emit_samples(kind, spec, nodes):
    seen = []
    g = train_federated(kind, [tr for tr, _ in nodes], spec, rounds=2, local_epochs=1, hyper=FAST[kind],
                        on_round=lambda r, gen: seen.append((r, len(gen.sample(40, seed=r)))))
    assert seen == [(1, 40), (2, 40)]
    assert g.fit_info["nodes"] == [len(tr) for tr, _ in nodes]


def test_fedavg_round_of_one_node_equals_that_nodes_update(spec, nodes):
    """With a single node, the manager's FedAvg returns exactly the node's parameters."""
    from generative.backends.vae_bgm import manager_fedavg, node_vae_round
    from generative.federated import federated_summary

    tr = nodes[0][0]
    summary = federated_summary([tr], spec)
    up = node_vae_round(spec, summary, None, tr, local_epochs=1, seed=0, **FAST["vae_bgm"])
    avg = manager_fedavg([up])
    for k in up["params"]:
        np.testing.assert_array_equal(avg[k], up["params"][k])


def test_latent_mixture_of_mixtures_weights_by_patients():
    from generative.backends.vae_bgm import manager_latent_mixture

    a = {"n": 300, "weights": np.array([0.5, 0.5]), "means": np.zeros((2, 2)), "covariances": np.stack([np.eye(2)] * 2)}
    b = {"n": 100, "weights": np.array([1.0]), "means": np.ones((1, 2)), "covariances": np.eye(2)[None]}
    m = manager_latent_mixture([a, b])
    np.testing.assert_allclose(m["weights"], [0.375, 0.375, 0.25])
    assert m["means"].shape == (3, 2) and m["n"] == 400


def test_bayesian_network_federated_two_steps(spec, nodes):
    g = train_federated("bayesian_network", [tr for tr, _ in nodes], spec, hyper=FAST["bayesian_network"])
    assert len(g.fit_info["node_edges"]) == 3
    assert len(g.sample(100)) == 100


def test_sd_sharing_pools_only_gated_rows(spec, nodes):
    from generative.gate import GateThresholds

    trains, holds = [tr for tr, _ in nodes], [ho for _, ho in nodes]
    g = train_federated("sd_sharing", trains, spec, holdouts=holds, hyper={"kind": "vae_bgm", **FAST["vae_bgm"]},
                        thresholds=GateThresholds(nndr_p5_ratio_min=0, dcr_p5_ratio_min=0, mia_auc_max=1,
                                                  rare_combination_ratio_max=1e9))
    assert [s["passed"] for s in g.fit_info["node_gates"]] == [True, True, True]
    assert len(g.pool) == sum(len(t) for t in trains)
    # a gate nobody can pass shares nothing
    with pytest.raises(ValueError, match="no node passed"):
        train_federated("sd_sharing", trains, spec, holdouts=holds, hyper={"kind": "vae_bgm", **FAST["vae_bgm"]},
                        thresholds=GateThresholds(mia_auc_max=0.5, nndr_p5_ratio_min=2.0))


@pytest.mark.slow
def test_sdv_ctgan_adapter(spec, cohort):
    g = make_generator("sdv_ctgan", spec, epochs=1, batch_size=100).fit(cohort)
    s = g.sample(100)
    assert list(s.columns) == spec.names and set(s["TP53"]) <= {0, 1}
