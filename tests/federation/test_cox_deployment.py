"""Real processes: a Cox study through SuperLink + 3 SuperNodes (TLS, node authentication,
prefork launcher). Each round's cox_sums messages cross Flower; the final coefficients equal the
same study run in process, and the model saved by the ServerApp predicts."""
import json

import numpy as np
import pytest

from fl_engine.deploy import control
from fl_engine.deploy.local import APP_DIR, LocalFederation
from fl_engine.federation import load_model, parse_run_config, run_in_process
from fl_engine.node.datasets import load_dataset

pytestmark = pytest.mark.slow


def test_a_cox_study_over_flower_equals_the_same_study_in_process(tmp_path, node_tables):
    with LocalFederation(tmp_path / "fed", launcher="prefork") as fed:
        for name, table in node_tables.items():
            fed.add_node(name, table, dataset="study")
        fed.wait_nodes_online(120)
        cfg = {"dataset": "study", "num_rounds": 4, "min_nodes": 3, "seed": 5, "model": "cox",
               "model_params": json.dumps({"penalizer": 0.05}), "feature_groups": "clinical,cytogenetic",
               "round_timeout_s": 120.0, "metrics_path": str(tmp_path / "metrics.jsonl"),
               "model_dir": str(tmp_path / "model")}
        run_id = control.start_run(APP_DIR, cfg, fed.address, **fed.conn_kwargs())
        status = fed.wait_run(run_id, 300)
        assert status["status"] == "finished:completed", \
            control.run_logs(run_id, fed.address, **fed.conn_kwargs())[-3000:]
        tables = {n: load_dataset(fed.root / "nodes" / n / "data", "study")[0] for n in ("H1", "H2", "H3")}
    rounds = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rounds = [r for r in rounds if "round" in r and r.get("phase") != "comparison"]
    assert sorted({r["round"] for r in rounds}) == [1, 2, 3, 4]
    for r in rounds:
        assert {m["node"] for m in r["metrics"] if m["name"] == "c_index"} == {"H1", "H2", "H3", "global"}
    model, pre, meta = load_model(tmp_path / "model")
    assert meta["model"] == "cox" and meta["baseline"]
    hist = run_in_process({**cfg, "metrics_path": "", "model_dir": ""}, tables)
    np.testing.assert_allclose(model.get_weights()[0], hist.weights[0], rtol=0, atol=1e-10)
    table = tables["H2"]
    s = model.predict_survival(pre.transform(table), np.array([12.0, 36.0]))
    assert np.all((s > 0) & (s <= 1)) and np.all(s[:, 1] <= s[:, 0])
    assert np.allclose(hist.model(parse_run_config({k: v for k, v in cfg.items() if k != "metrics_path"}))
                       .predict_risk(pre.transform(table)), model.predict_risk(pre.transform(table)))
