"""Smoke test on the real IWG-PM cohort (skips when ../shared/data is absent)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "mds_iwgpm"

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def bench():
    if not (DATA / "df_clinical.tsv").exists():
        pytest.skip(f"IWG-PM data not found at {DATA} (see ../shared/data/README.md)")
    spec = importlib.util.spec_from_file_location("synthetic_mds", ROOT / "bench" / "synthetic_mds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_federated_bayesian_network_on_iwgpm(bench):
    from generative import evaluate_gate, train_federated, validate_federation

    df = bench.load_iwgpm()
    spec = bench.mds_spec(df)
    spec.validate(df)
    nodes = bench.split_nodes(df)
    g = train_federated("bayesian_network", [tr for tr, _ in nodes], spec, hyper={"max_indegree": 2})
    rep = validate_federation(g.sample(sum(len(tr) for tr, _ in nodes), seed=1), nodes, spec)
    assert rep["csf"] > 0.9
    assert 0.55 < rep["tstr_c_index"] < 0.85
    assert evaluate_gate(rep)["passed"], evaluate_gate(rep)["failed"]
