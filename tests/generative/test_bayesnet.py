import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from generative.backends import bayesnet as bn
from generative.federated import federated_summary


def test_federated_parameters_equal_pooled_estimate_exactly(spec, nodes):
    """Fixed structure: CPDs from summed node counts == pgmpy ML estimate on the pooled rows."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.estimators import MaximumLikelihoodEstimator
        from pgmpy.models import DiscreteBayesianNetwork

    frames = [tr for tr, _ in nodes]
    summary = federated_summary(frames, spec)
    edges = [["TP53", "cyto_ipssr"], ["TP53", "bm_blast"], ["ASXL1", "SRSF2"], ["SF3B1", "U2AF1"],
             ["TP53", "os_event"], ["bm_blast", "os_event"], ["age", "os_months"]]
    counts = bn.manager_counts([bn.node_family_counts(spec, summary, edges, df) for df in frames])
    fed = bn.cpds_from_counts(counts, alpha=0.0)

    g = bn.BayesianNetworkGenerator(spec, summary=summary)
    pooled = g.codes(spec.validate(pd.concat(frames, ignore_index=True)))
    states = {c: list(range(g.card[c])) for c in pooled.columns}
    model = DiscreteBayesianNetwork(edges)
    model.add_nodes_from(pooled.columns)
    est = MaximumLikelihoodEstimator(model, pooled, state_names=states)
    parents = bn.parents_of(edges, spec.names)
    checked = 0
    for v in pooled.columns:
        cpd = est.estimate_cpd(v)
        ref = cpd.values  # axes: v, then evidence in cpd.variables[1:] order
        order = [cpd.variables.index(p) for p in [v] + parents[v]]
        ref = np.transpose(ref, order).reshape(g.card[v], -1)
        seen = counts[v].sum(0) > 0  # pgmpy and we differ only where a parent config never occurs
        np.testing.assert_array_equal(fed[v][:, seen], ref[:, seen])
        checked += int(seen.sum())
    assert checked > 20  # parent configurations compared


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 500),
                          st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20)),
                min_size=1, max_size=4))
def test_merged_structure_is_acyclic_and_bounded(nodes):
    names = [f"v{i}" for i in range(8)]
    structures = [{"n": n, "edges": [[f"v{a}", f"v{b}"] for a, b in e if a != b]} for n, e in nodes]
    edges = bn.manager_merge_structures(structures, names, threshold=0.3, max_indegree=2)
    order = bn.topological_order(edges, names)  # raises on a cycle
    assert sorted(order) == sorted(names)
    indeg = {n: 0 for n in names}
    for _, v in edges:
        indeg[v] += 1
    assert max(indeg.values()) <= 2


def test_majority_edge_survives_vote():
    names = ["a", "b", "c"]
    s = [{"n": 60, "edges": [["a", "b"]]}, {"n": 30, "edges": [["b", "a"], ["b", "c"]]}, {"n": 10, "edges": [["b", "c"]]}]
    assert bn.manager_merge_structures(s, names) == [["a", "b"]]


def test_sampling_keeps_types_ranges_and_point_masses(spec, cohort):
    g = bn.BayesianNetworkGenerator(spec, max_indegree=2).fit(cohort)
    s = g.sample(500, seed=3)
    assert list(s.columns) == spec.names and len(s) == 500
    assert s["age"].between(cohort.age.min(), cohort.age.max()).all()
    assert set(s["sex"]) <= {"F", "M"} and set(s["TP53"]) <= {0, 1}
    assert np.all(s["age"] == np.round(s["age"]))
    # the parameters are sufficient statistics and reproduce the model exactly
    g2 = bn.BayesianNetworkGenerator(spec, summary=g.summary).set_parameters(g.get_parameters())
    pd.testing.assert_frame_equal(g2.sample(200, seed=9), g.sample(200, seed=9))


def test_greedy_bic_finds_planted_gene_pairs(spec, cohort):
    from generative.transform import local_summary

    g = bn.BayesianNetworkGenerator(spec, summary=local_summary(spec.validate(cohort), spec))
    codes = g.codes(spec.validate(cohort))
    edges = bn.greedy_bic_structure(codes, g.card, max_indegree=2)
    undirected = {frozenset(e) for e in edges}
    assert frozenset(("ASXL1", "SRSF2")) in undirected
    assert frozenset(("SF3B1", "U2AF1")) in undirected
    assert frozenset(("TET2", "DNMT3A")) not in undirected  # simulated independent
    bn.topological_order(edges, spec.names)


def test_family_bic_prefers_the_true_parent():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 500)
    b = np.where(rng.random(500) < 0.9, a, 1 - a)
    c = rng.integers(0, 2, 500)
    with_a = bn.family_bic(b, [a], 2, [2])
    with_c = bn.family_bic(b, [c], 2, [2])
    alone = bn.family_bic(b, [], 2, [])
    assert with_a > alone > with_c


@pytest.mark.slow
def test_pgmpy_hill_climbing_backend(spec, cohort):
    g = bn.BayesianNetworkGenerator(spec, max_indegree=1, structure_method="pgmpy_hc").fit(cohort)
    bn.topological_order(g.edges, spec.names)
    assert len(g.sample(50)) == 50
