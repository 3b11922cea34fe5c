"""Pure parts of the federation: FedAvg, node selection, privacy of replies, config, executor."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_engine.federation import FederationError, load_model, parse_run_config, run_in_process
from fl_engine.federation.core import (
    NodeReply, NodeRequest, build_preprocessor, check_reply_privacy, fedavg, handle_request,
    initial_weights, select_nodes,
)


shapes = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(shapes, st.lists(st.floats(0.5, 1000), min_size=1, max_size=5), st.integers(0, 10_000))
def test_fedavg_of_identical_models_returns_the_model(shape_list, counts, seed):
    rng = np.random.default_rng(seed)
    model = [rng.normal(size=s).astype(np.float32) for s in shape_list]
    out = fedavg([model] * len(counts), counts)
    for a, b in zip(out, model):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.floats(-100, 100), st.floats(-100, 100), st.integers(1, 1000), st.integers(1, 1000))
def test_fedavg_weights_by_patient_count(a, b, na, nb):
    out = fedavg([[np.array([a])], [np.array([b])]], [na, nb])[0][0]
    assert out == pytest.approx((na * a + nb * b) / (na + nb), rel=1e-9, abs=1e-9)


def test_fedavg_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        fedavg([[np.zeros(2)], [np.zeros(3)]], [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        fedavg([[np.zeros(2)]], [0])


@given(st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
       st.floats(0.01, 1.0), st.integers(1, 8), st.integers(0, 5))
def test_select_nodes(names, fraction, min_nodes, round_):
    chosen = select_nodes(names, fraction, min_nodes, seed=1, round_=round_)
    assert set(chosen) <= set(names) and len(set(chosen)) == len(chosen)
    assert len(chosen) >= min(min_nodes, len(names))
    assert chosen == select_nodes(list(reversed(names)), fraction, min_nodes, seed=1, round_=round_)


def test_parse_run_config_names_the_bad_key():
    with pytest.raises(ValueError, match="fraction_train"):
        parse_run_config({"fraction_train": 1.5})
    with pytest.raises(ValueError, match="unknown key"):
        parse_run_config({"epochs": 3})
    with pytest.raises(ValueError, match="model_params"):
        parse_run_config({"model_params": "{not json"})
    cfg = parse_run_config({"dataset": "d", "model_params": '{"hidden": [8]}', "features": "age, hb"})
    assert cfg.model_params == {"hidden": [8]} and cfg.features == ("age", "hb")
    assert parse_run_config(cfg.to_flat()) == cfg


def _replies_of_a_study(node_tables):
    """Every reply a node sends in a one-round study, with the request it answers."""
    cfg = parse_run_config({"dataset": "d", "num_rounds": 1, "min_nodes": 3})
    stats = {n: handle_request(t, cfg, NodeRequest("stats"), n) for n, t in node_tables.items()}
    pre = build_preprocessor(cfg, [r.stats for r in stats.values()])
    w = initial_weights(cfg, len(pre.output_names))
    conf = {"preprocessor": pre.to_dict(), "round": 1}
    out = [("stats", r, None) for r in stats.values()]
    for n, t in node_tables.items():
        out.append(("train", handle_request(t, cfg, NodeRequest("train", w, conf), n), [a.shape for a in w]))
        out.append(("evaluate", handle_request(t, cfg, NodeRequest("evaluate", w, conf), n), None))
    return out


def test_every_reply_holds_only_weights_or_aggregates(node_tables):
    replies = _replies_of_a_study(node_tables)
    assert {k for k, _, _ in replies} == {"stats", "train", "evaluate"}
    n_rows = sum(len(t) for t in node_tables.values())
    for kind, reply, shapes in replies:
        check_reply_privacy(kind, reply, shapes)  # raises on anything else
        for a in reply.arrays:
            assert a.shape in [tuple(s) for s in shapes]
        # nothing row-shaped: no array or list as long as a node's table
        for v in reply.metrics.values():
            assert np.isscalar(v)
        if reply.stats is not None:
            assert "patient_id" not in json.dumps(reply.stats)
            assert "os_months" not in reply.stats["columns"]
    assert n_rows > 0


def test_privacy_check_rejects_rows(node_tables):
    name, table = next(iter(node_tables.items()))
    rows = table[["age"]].to_numpy(dtype=np.float32)
    with pytest.raises(ValueError, match="weight shapes"):
        check_reply_privacy("train", NodeReply(name, arrays=[rows]), [(3, 3)])
    with pytest.raises(ValueError, match="array"):
        check_reply_privacy("evaluate", NodeReply(name, arrays=[rows]), None)
    with pytest.raises(ValueError, match="scalar"):
        check_reply_privacy("evaluate", NodeReply(name, metrics={"ages": rows.ravel().tolist()}), None)
    with pytest.raises(ValueError, match="stats"):
        check_reply_privacy("stats", NodeReply(name, stats={"n": 3, "columns": {}, "rows": [1, 2]}), None)


def test_in_process_study_writes_metrics_and_model(node_tables, tmp_path):
    cfg = {"dataset": "d", "num_rounds": 2, "min_nodes": 3, "local_epochs": 2, "seed": 7,
           "metrics_path": str(tmp_path / "m.jsonl"), "model_dir": str(tmp_path / "model"),
           "portal_run_id": "42"}
    hist = run_in_process(cfg, node_tables)
    lines = [json.loads(l) for l in (tmp_path / "m.jsonl").read_text().splitlines()]
    rounds = [l for l in lines if l["type"] == "round"]
    assert [l["round"] for l in rounds] == [1, 2] and all(l["run"] == 42 for l in lines)
    assert [l["seq"] for l in lines] == list(range(1, len(lines) + 1))  # numbered, no gap
    assert lines[0]["type"] == "started" and lines[-1]["type"] == "finished"
    # the finished event carries the very files written to model_dir
    from fl_engine.federation.events import unpack_artefact
    for name in ("model.npz", "model.json"):
        assert unpack_artefact(lines[-1]["artefacts"][name]) == (tmp_path / "model" / name).read_bytes()
    for rec in rounds:
        cs = {m["node"]: m["value"] for m in rec["metrics"] if m["name"] == "c_index"}
        assert set(cs) == {"H1", "H2", "H3", "global"}
        assert all(0 <= c <= 1 for c in cs.values())
    model, pre, meta = load_model(tmp_path / "model")
    x = pre.transform(node_tables["H1"])
    risk = model.predict_risk(x)
    assert risk.shape == (len(node_tables["H1"]),) and np.isfinite(risk).all()
    np.testing.assert_allclose(risk, hist.model(parse_run_config(cfg)).predict_risk(x), rtol=1e-6)
    again = run_in_process({**cfg, "metrics_path": "", "model_dir": ""}, node_tables)
    for a, b in zip(hist.weights, again.weights):
        np.testing.assert_array_equal(a, b)  # same seed, same model


def test_in_process_needs_min_nodes(node_tables):
    with pytest.raises(FederationError, match="min_nodes=4"):
        run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 4, "round_timeout_s": 0.2},
                       node_tables)


def test_a_failing_node_is_tolerated_above_min_nodes(node_tables):
    tables = dict(node_tables)
    tables["H3"] = tables["H3"].drop(columns=["os_months"])  # its training will fail
    hist = run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 2}, tables)
    trained = {m["node"] for m in hist.rounds[0]["metrics"] if m["name"] == "n_train"}
    assert trained == {"H1", "H2"}
    with pytest.raises(FederationError, match="os_months"):
        run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 3}, tables)


def test_a_node_that_misses_a_phase_is_reported_with_its_reason(node_tables, tmp_path):
    tables = dict(node_tables)
    tables["H3"] = tables["H3"].drop(columns=["os_months"])
    run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 2, "metrics_path": str(tmp_path / "m.jsonl")},
                   tables)
    events = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    missed = [e for e in events if e["type"] == "node_missed"]
    assert missed and {e["node"] for e in missed} == {"H3"}
    assert all("os_months" in e["reason"] and e["phase"] for e in missed), missed


def test_run_time_limit_ends_a_run_with_a_readable_error(node_tables, tmp_path):
    with pytest.raises(FederationError, match="time limit of 0.3 s"):
        run_in_process({"dataset": "d", "num_rounds": 500, "min_nodes": 3, "run_timeout_s": 0.3,
                        "metrics_path": str(tmp_path / "m.jsonl")}, node_tables)
    last = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "failed" and "time limit" in last["reason"]


def test_savae_runs_through_the_same_federation(node_tables):
    pytest.importorskip("fl_engine.models.savae")
    hist = run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 3, "model": "savae"}, node_tables)
    c = [m["value"] for m in hist.rounds[0]["metrics"] if m["node"] == "global" and m["name"] == "c_index"]
    assert 0 <= c[0] <= 1


def test_events_are_posted_to_the_portal_with_the_runs_hmac(node_tables, tmp_path, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    got = []

    class Portal(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append((self.path, self.headers.get("Authorization"),
                        json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    from fl_engine.federation.events import run_token

    (tmp_path / "key").write_bytes(b"k" * 32)
    monkeypatch.setenv("FEDHAEM_RUN_EVENTS_KEY_FILE", str(tmp_path / "key"))
    try:
        run_in_process({"dataset": "d", "num_rounds": 2, "min_nodes": 3, "portal_run_id": "5",
                        "events_url": f"http://127.0.0.1:{srv.server_port}/api/runs/5/events/"}, node_tables)
    finally:
        srv.shutdown()
    rounds = [g for g in got if g[2]["type"] == "round"]
    assert [g[2]["round"] for g in rounds] == [1, 2]
    assert [g[2]["seq"] for g in got] == list(range(1, len(got) + 1))
    assert got[-1][2]["type"] == "finished" and set(got[-1][2]["artefacts"]) == {"model.npz", "model.json"}
    token = f"Token {run_token(b'k' * 32, 5)}"
    assert all(p == "/api/runs/5/events/" and a == token and b["run"] == 5 for p, a, b in got)
    names = {(m["node"], m["name"]) for m in rounds[0][2]["metrics"]}
    assert {("global", "c_index"), ("global", "loss"), ("H1", "c_index"), ("H3", "loss")} <= names


def test_fused_evaluation_gives_the_same_model_and_metrics(node_tables, monkeypatch):
    """Fused: each round's evaluation rides on the next round's training request, the last one on
    the baseline request; the same model, metrics and baseline in fewer exchanges."""
    from fl_engine.federation import executor
    from fl_engine.federation.config import parse_run_config

    def run(config: dict):
        cfg = parse_run_config(config)
        transport = executor.LocalTransport(cfg, node_tables)
        kinds: list[str] = []
        request = transport.request

        def counting(reqs, timeout_s):
            kinds.append(next(iter(reqs.values())).kind)
            return request(reqs, timeout_s)
        monkeypatch.setattr(transport, "request", counting)
        return executor.run_federation(cfg, transport), kinds

    base = {"dataset": "d", "num_rounds": 3, "min_nodes": 3, "seed": 5}
    sep, sep_kinds = run(base)
    fused, fused_kinds = run({**base, "fuse_evaluation": True})
    assert sep_kinds == ["stats"] + ["train", "evaluate"] * 3 + ["baseline"]
    assert fused_kinds == ["stats", "train", "train", "train", "baseline"]
    assert sep.baseline == fused.baseline and sep.baseline["times"]
    for a, b in zip(sep.weights, fused.weights):
        np.testing.assert_array_equal(a, b)
    for rs, rf in zip(sep.rounds, fused.rounds):
        assert rs["round"] == rf["round"]
        ms = {(m["node"], m["name"]): m["value"] for m in rs["metrics"] if not m["name"].endswith("time_s")}
        mf = {(m["node"], m["name"]): m["value"] for m in rf["metrics"] if not m["name"].endswith("time_s")}
        assert ms.keys() == mf.keys()
        for k in ms:
            assert ms[k] == pytest.approx(mf[k], rel=1e-9, abs=1e-12), k


def test_federated_baseline_equals_pooled_breslow():
    """Summed node sums give exactly the pooled binned Breslow estimate."""
    from fl_engine.federation.core import baseline_sums, merge_baseline

    rng = np.random.default_rng(5)
    t = rng.exponential(30, 600)
    e = (rng.random(600) < 0.7).astype(float)
    r = rng.normal(size=600)
    parts = [baseline_sums(t[i::3], e[i::3], r[i::3]) for i in range(3)]
    times, fed = merge_baseline(parts)
    _, pooled = merge_baseline([baseline_sums(t, e, r)])
    np.testing.assert_allclose(fed, pooled, rtol=1e-12)
    # against a direct monthly Breslow sum
    month = np.floor(t)
    direct = np.cumsum([e[month == k].sum() / np.exp(r[month >= k]).sum() if (month >= k).any() else 0.0
                        for k in range(600)])
    np.testing.assert_allclose(pooled, direct, rtol=1e-10)
    assert np.all(np.diff(pooled) >= 0) and times[0] == 1.0


def test_in_process_model_predicts_survival_curves(node_tables, tmp_path):
    from fl_engine.federation.loop import load_model

    hist = run_in_process({"dataset": "d", "num_rounds": 1, "min_nodes": 3, "seed": 3,
                           "model_dir": str(tmp_path / "model")}, node_tables)
    assert hist.baseline and len(hist.baseline["cumhaz"]) == 600
    model, pre, meta = load_model(tmp_path / "model")
    table = next(iter(node_tables.values()))
    surv = model.predict_survival(pre.transform(table), np.array([12.0, 24.0, 60.0]))
    assert surv.shape == (len(table), 3)
    assert np.all((surv >= 0) & (surv <= 1)) and np.all(surv[:, 0] >= surv[:, 2])
    assert surv[:, 2].std() > 0  # patients differ


def test_privacy_check_bounds_baseline_replies(node_tables):
    from fl_engine.federation.core import BASELINE_EDGES_MONTHS

    name = next(iter(node_tables))
    n = len(BASELINE_EDGES_MONTHS) - 1
    ok = NodeReply(name, arrays=[np.zeros(n), np.ones(n)])
    check_reply_privacy("baseline", ok, None)
    with pytest.raises(ValueError, match="baseline"):
        check_reply_privacy("baseline", NodeReply(name, arrays=[np.zeros(5), np.zeros(5)]), None)
    with pytest.raises(ValueError, match="baseline"):
        check_reply_privacy("baseline", NodeReply(name, arrays=[-np.ones(n), np.ones(n)]), None)
