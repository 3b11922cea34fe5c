"""Real processes: an analysis study through SuperLink + 3 SuperNodes (TLS, node authentication,
prefork launcher). The describe, km and cox messages cross Flower; the ServerApp writes
analysis.json, which equals the same study run in process."""
import json

import numpy as np
import pytest

from fl_engine.deploy import control
from fl_engine.deploy.local import APP_DIR, LocalFederation
from fl_engine.federation.executor import run_analysis_in_process
from fl_engine.node.datasets import load_dataset

pytestmark = pytest.mark.slow


def test_an_analysis_study_over_flower_writes_analysis_json_equal_to_the_run_in_process(tmp_path, node_tables):
    with LocalFederation(tmp_path / "fed", launcher="prefork") as fed:
        for name, table in node_tables.items():
            fed.add_node(name, table, dataset="study")
        fed.wait_nodes_online(120)
        cfg = {"dataset": "study", "task": "analysis", "min_nodes": 3, "min_cell_count": 5,
               "analysis": json.dumps({"group_by": "sex", "covariates": ["age", "hb"]}),
               "round_timeout_s": 120.0, "metrics_path": str(tmp_path / "events.jsonl"),
               "model_dir": str(tmp_path / "out")}
        run_id = control.start_run(APP_DIR, cfg, fed.address, **fed.conn_kwargs())
        status = fed.wait_run(run_id, 300)
        assert status["status"] == "finished:completed", \
            control.run_logs(run_id, fed.address, **fed.conn_kwargs())[-3000:]
        tables = {n: load_dataset(fed.root / "nodes" / n / "data", "study")[0] for n in ("H1", "H2", "H3")}
    doc = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert doc["version"] == 1 and doc["hospitals"] == ["H1", "H2", "H3"] and doc["min_cell_count"] == 5
    assert set(doc["km"]["groups"]) == {"F", "M"} and doc["logrank"]["df"] == 1
    assert doc["cox"]["covariates"] == ["age", "hb"] and doc["cox"]["iterations"] >= 2
    phases = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines() if line.strip()]
    assert [e["phase"] for e in phases if e["type"] == "phase"][:3] == ["describe", "km", "cox"]
    ref, _ = run_analysis_in_process({**cfg, "metrics_path": "", "model_dir": ""}, tables)
    np.testing.assert_allclose(doc["cox"]["coef"], ref["cox"]["coef"], atol=1e-12)
    assert doc["km"] == json.loads(json.dumps(ref["km"]))
    assert doc["describe"]["pooled"] == json.loads(json.dumps(ref["describe"]["pooled"]))
