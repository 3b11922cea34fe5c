"""Federated synthetic-cohort generation (fl_engine.federation.synthesis) with the in-process
executor: the same loop, node handler and reply privacy check as the Flower apps."""
import json

import numpy as np
import pandas as pd
import pytest

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeReply, check_reply_privacy
from fl_engine.federation.flower_io import MESSAGE_TYPES
from fl_engine.federation.synthesis import (
    SYNTH_KINDS, decode_payload, encode_payload, reply_payload, run_synthesis_in_process, synthesis_spec,
)

# Few genes keep the gene-pair tests (Fisher per pair, each round) fast; the loop is the same.
FEATURES = "age,sex,hb,plt,bm_blast,cyto_ipssr,complex,del5q,TP53,SF3B1,ASXL1,TET2"
# Sizes of the fixed grids in replies (quantiles, histogram edges): node sizes must differ from
# them so that a dimension equal to a node's row count can only mean rows.
GRID_SIZES = {41, 200, 201, 255, 256, 261, 262}


@pytest.fixture(scope="module")
def tables():
    from fl_engine.cohort import generate_mds_cohort

    df = generate_mds_cohort(420, seed=5)
    idx = np.random.default_rng(1).permutation(len(df))
    return {"H1": df.iloc[np.sort(idx[:250])].reset_index(drop=True),
            "H2": df.iloc[np.sort(idx[250:])].reset_index(drop=True)}


def _config(tmp_path, **over):
    return {"features": FEATURES, "num_rounds": 2, "local_epochs": 2, "seed": 3,
            "generator_params": json.dumps({"hidden": 32, "latent": 4, "n_components": 3}),
            "metrics_path": str(tmp_path / "metrics.jsonl"), "model_dir": str(tmp_path / "out"), **over}


@pytest.fixture(scope="module")
def vae_run(tables, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    box: list = []
    out = run_synthesis_in_process(_config(tmp), tables, transport_out=box)
    return out, box[0], tmp


def test_each_round_reports_federated_and_alone_scores(vae_run):
    out, _, tmp = vae_run
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    for rec in out["rounds"]:
        g = {m["name"]: m["value"] for m in rec["metrics"] if m["node"] == "global"}
        for k in ("csf", "gsf", "nndr_p5"):
            assert 0 <= g[k] <= 1, (rec["round"], k, g[k])
        for node in ("H1", "H2"):
            names = {m["name"] for m in rec["metrics"] if m["node"] == node}
            assert {"csf", "gsf", "nndr_p5", "alone_csf", "alone_gsf", "alone_nndr_p5"} <= names
    last = {m["name"] for m in out["rounds"][-1]["metrics"] if m["node"] == "global"}
    assert "tstr_c_index" in last  # utility only on the final cohort
    lines = [json.loads(x) for x in (tmp / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines if "round" in x] == [1, 2]
    assert lines[-1]["type"] == "finished"


def test_final_cohort_report_and_gate_are_written(vae_run, tables):
    out, _, tmp = vae_run
    syn = pd.read_csv(tmp / "out" / "synthetic.csv")
    meta = json.loads((tmp / "out" / "synthesis.json").read_text())
    spec = synthesis_spec(parse_run_config({"task": "synthesis", "features": FEATURES}))
    assert list(syn.columns) == spec.names
    assert len(syn) == meta["n_rows"] == sum(meta["n_train"].values())
    assert meta["report"]["n_nodes"] == 2 and 0 <= meta["report"]["csf"] <= 1
    assert {c["name"] for c in meta["gate"]["checks"]} >= {"nndr_p5_ratio", "mia_auc"}
    assert meta["report"]["gate"]["passed"] == meta["gate"]["passed"]


def test_replies_carry_no_real_rows(vae_run, tables):
    out, transport, _ = vae_run
    kinds = {k for k, _ in transport.replies}
    assert {"synth_summary", "synth_round", "synth_mixture", "synth_alone", "synth_validate"} <= kinds
    sizes = set()
    for t in tables.values():
        n = len(t)
        complete = len(t[synthesis_spec(parse_run_config({"task": "synthesis", "features": FEATURES})).names].dropna())
        sizes |= {n, complete}
    n_train = {int(r.metrics["n_train"]) for _, r in transport.replies}
    n_hold = {int(r.metrics["n_holdout"]) for _, r in transport.replies}
    sizes |= n_train | n_hold
    assert not sizes & GRID_SIZES, "pick node sizes that differ from the grid sizes"
    for kind, rep in transport.replies:
        for a in rep.arrays:
            assert np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_, (kind, a.dtype)
            assert not set(a.shape) & sizes, f"{kind} reply has an array of shape {a.shape} (a row dimension?)"
        # no real value of a continuous lab travels as a sequence of rows either
        payload = reply_payload(rep) if rep.stats else {}
        assert "rows" not in json.dumps(list(payload) if isinstance(payload, dict) else [])


def test_privacy_check_rejects_rows_text_and_foreign_shapes(tables):
    rows = tables["H1"][["hb", "plt"]].dropna().to_numpy()
    skel, arrays = encode_payload({"rows": rows})
    with pytest.raises(ValueError, match="payload keys"):
        check_reply_privacy("synth_validate", NodeReply("H1", arrays, {}, {"payload": skel}), None)
    skel, arrays = encode_payload({"n": 3, "columns": {"sex": {"counts": np.array(["F", "M"])}}})
    with pytest.raises(ValueError, match="only numbers"):
        check_reply_privacy("synth_summary", NodeReply("H1", arrays, {}, {"payload": skel}), None)
    skel, arrays = encode_payload({"n": 3, "params": {"w": rows}})
    with pytest.raises(ValueError, match="shape"):
        check_reply_privacy("synth_round", NodeReply("H1", arrays, {}, {"payload": skel}), [(32, 16), (32,)])
    skel, arrays = encode_payload({"n_train": 3, "parts": ["fidelity", "age=71;hb=9.8"]})
    with pytest.raises(ValueError, match="text"):
        check_reply_privacy("synth_validate", NodeReply("H1", arrays, {}, {"payload": skel}), None)
    with pytest.raises(ValueError, match="scalar"):
        check_reply_privacy("synth_alone", NodeReply("H1", [], {"alone_csf": [0.5]}), None)


def test_bayesian_network_runs_one_round(tables, tmp_path):
    out = run_synthesis_in_process(_config(tmp_path, generator="bayesian_network",
                                           generator_params=json.dumps({"max_indegree": 2})), tables)
    assert [r["round"] for r in out["rounds"]] == [1]
    names = {(m["node"], m["name"]) for m in out["rounds"][0]["metrics"]}
    assert {("global", "csf"), ("global", "gsf"), ("global", "nndr_p5"), ("H1", "alone_csf"), ("H2", "alone_gsf")} <= names
    assert (tmp_path / "out" / "synthetic.csv").exists()


def test_payload_codec_round_trips_nested_arrays():
    obj = {"a": np.arange(3), "b": [{"c": np.array(["x", "y"])}, 2.5], "d": {"e": None}, "z": np.array(7)}
    skel, arrays = encode_payload(obj)
    json.dumps(skel)
    back = decode_payload(skel, arrays)
    assert back["a"].tolist() == [0, 1, 2] and back["b"][0]["c"].tolist() == ["x", "y"] and back["d"] == {"e": None}
    assert back["z"].shape == ()  # 0-d counters (batch-norm num_batches_tracked) stay 0-d


def test_config_names_the_bad_generator_key():
    with pytest.raises(ValueError, match="generator"):
        parse_run_config({"task": "synthesis", "generator": "gan9000"})
    with pytest.raises(ValueError, match="generator_params.*bogus"):
        parse_run_config({"task": "synthesis", "generator_params": '{"bogus": 1}'})
    with pytest.raises(ValueError, match="task"):
        parse_run_config({"task": "teleport"})
    assert parse_run_config({}).task == "survival"


def test_every_synth_kind_has_a_flower_message_type():
    assert all(MESSAGE_TYPES[k] == f"query.{k}" for k in SYNTH_KINDS)


def test_ctgan_runs_through_the_same_rounds(tables, tmp_path):
    params = {"z_dim": 16, "gen_dims": [32], "dis_dims": [32], "pac": 5, "batch_size": 50}
    out = run_synthesis_in_process(_config(tmp_path, generator="ctgan", num_rounds=2, local_epochs=1,
                                           generator_params=json.dumps(params)), tables)
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    g = {m["name"] for m in out["rounds"][-1]["metrics"] if m["node"] == "global"}
    assert {"csf", "gsf", "nndr_p5", "tstr_c_index"} <= g
    assert {m["name"] for m in out["rounds"][-1]["metrics"] if m["node"] == "H2"} >= {"alone_csf", "csf"}


# --- synthetic-data sharing (sd_sharing): node-gated rows, pooled by the manager ----------------

def _share_request(spec, n_rows: int):
    from fl_engine.federation.core import NodeRequest

    skel, arrays = encode_payload({"columns": spec.names, "n_rows": n_rows})
    return NodeRequest("synth_share", arrays, {"payload": skel, "round": 1})


def _share_reply(rows: dict, passed: float):
    skel, arrays = encode_payload({"rows": rows})
    return NodeReply("H1", arrays, {"gate_passed": passed, "n_train": 10.0}, {"payload": skel})


def test_sd_sharing_pools_only_rows_whose_node_gate_passed(tables, tmp_path):
    from fl_engine.federation.synthesis import payload_to_rows

    box: list = []
    # default base generator (vae_bgm); 100 local epochs, seed 3: at least one node passes its gate
    out = run_synthesis_in_process(_config(tmp_path, generator="sd_sharing", local_epochs=100), tables,
                                   transport_out=box)
    assert [r["round"] for r in out["rounds"]] == [1]
    metrics = {(m["node"], m["name"]): m["value"] for m in out["rounds"][0]["metrics"]}
    passed = {n: metrics[(n, "gate_passed")] for n in ("H1", "H2")}
    assert set(passed.values()) <= {0.0, 1.0} and any(passed.values()), passed
    for n in ("H1", "H2"):  # each check's measured value and threshold travel as scalars
        assert {f"gate_{c}_threshold" for c in ("nndr_p5_ratio", "dcr_p5_ratio", "mia_auc")} <= \
               {k for (node, k) in metrics if node == n}
    assert {("global", "csf"), ("global", "gsf"), ("global", "tstr_c_index")} <= set(metrics)

    shares = [(k, r) for k, r in box[0].replies if k == "synth_share"]
    assert sorted(r.name for _, r in shares) == ["H1", "H2"]
    spec = synthesis_spec(parse_run_config({"task": "synthesis", "features": FEATURES}))
    pooled = []
    for _, rep in shares:
        if rep.metrics["gate_passed"] != 1:
            assert rep.arrays == [] and rep.metrics["n_shared"] == 0, "a failed gate must share nothing"
            continue
        rows = reply_payload(rep)["rows"]
        assert all(np.issubdtype(a.dtype, np.number) for a in rows.values())  # categories as codes
        pooled.append(payload_to_rows(rows, spec))
        assert len(pooled[-1]) == rep.metrics["n_shared"] == rep.metrics["n_train"]
    syn = pd.read_csv(tmp_path / "out" / "synthetic.csv")
    meta = json.loads((tmp_path / "out" / "synthesis.json").read_text())
    assert list(syn.columns) == spec.names and meta["generator"] == "sd_sharing" and meta["num_rounds"] == 1
    assert len(syn) == meta["n_rows"] == sum(len(p) for p in pooled)
    # the cohort is the pooled shares (reordered), nothing else
    key = lambda d: sorted(map(tuple, d[spec.names].astype(str).to_numpy()))  # noqa: E731
    assert key(syn.round(6)) == key(pd.concat(pooled).round(6))


def test_privacy_check_refuses_rows_of_a_failed_gate_foreign_columns_or_too_many():
    from fl_engine.cohort import generate_mds_cohort
    from fl_engine.federation.synthesis import rows_to_payload

    spec = synthesis_spec(parse_run_config({"task": "synthesis", "features": FEATURES}))
    rows = rows_to_payload(spec.validate(generate_mds_cohort(40, seed=1)[spec.names].dropna().head(5)), spec)
    req = _share_request(spec, 5)
    check_reply_privacy("synth_share", _share_reply(rows, 1.0), None, req)  # a passing share is allowed
    with pytest.raises(ValueError, match="gate did not pass"):
        check_reply_privacy("synth_share", _share_reply(rows, 0.0), None, req)
    with pytest.raises(ValueError, match=r"foreign \['patient_id'\]"):
        check_reply_privacy("synth_share", _share_reply({**rows, "patient_id": np.arange(5)}, 1.0), None, req)
    with pytest.raises(ValueError, match="more than the 4 requested"):
        check_reply_privacy("synth_share", _share_reply(rows, 1.0), None, _share_request(spec, 4))
    with pytest.raises(ValueError, match="only against the synth_share request"):
        check_reply_privacy("synth_share", _share_reply(rows, 1.0), None)
    skel, arrays = encode_payload({"params": None, "rows": rows})  # rows in any other kind
    with pytest.raises(ValueError, match="payload keys"):
        check_reply_privacy("synth_alone", NodeReply("H1", arrays, {}, {"payload": skel}), None, req)
    texts = {**rows, "sex": np.array(["F"] * 5)}  # categories as text, not codes
    with pytest.raises(ValueError, match="only numbers"):
        check_reply_privacy("synth_share", _share_reply(texts, 1.0), None, req)


def test_sd_sharing_fails_naming_every_nodes_failed_checks(tables, tmp_path):
    from fl_engine.federation.core import FederationError

    # one local epoch: the untrained generators put rows into rare quasi-identifier cells
    with pytest.raises(FederationError, match="no node passed its privacy gate") as err:
        run_synthesis_in_process(_config(tmp_path, generator="sd_sharing", local_epochs=1, seed=4), tables)
    msg = str(err.value)
    assert "H1: " in msg and "H2: " in msg and "vs threshold" in msg, msg
    assert "rare_combination_ratio" in msg, msg
    assert not (tmp_path / "out" / "synthetic.csv").exists()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["type"] == "failed" and "privacy gate" in lines[-1]["reason"]


def test_sd_sharing_config_checks_the_base_generator():
    cfg = parse_run_config({"task": "synthesis", "generator": "sd_sharing",
                            "generator_params": '{"kind": "bayesian_network", "max_indegree": 2}'})
    assert cfg.generator_params == {"kind": "bayesian_network", "max_indegree": 2}
    with pytest.raises(ValueError, match="kind='sd_sharing'"):
        parse_run_config({"task": "synthesis", "generator": "sd_sharing", "generator_params": '{"kind": "sd_sharing"}'})
    with pytest.raises(ValueError, match="bogus"):
        parse_run_config({"task": "synthesis", "generator": "sd_sharing", "generator_params": '{"bogus": 1}'})
