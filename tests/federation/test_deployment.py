"""Real processes: SuperLink + 3 SuperNodes (TLS, SuperNode authentication, prefork launcher) on
127.0.0.1 with ports chosen at runtime. One federation for the module; tests run in file order
(the node-kill test comes after the tests that need all three nodes)."""
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from fl_engine.deploy import control
from fl_engine.deploy.local import APP_DIR, LocalFederation
from fl_engine.deploy.pki import ensure_node_keys
from fl_engine.federation import load_model, run_in_process
from fl_engine.node.datasets import load_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(tmp_path_factory, node_tables):
    root = tmp_path_factory.mktemp("fed")
    with LocalFederation(root, launcher="prefork") as f:
        for name, table in node_tables.items():
            f.add_node(name, table, dataset="study")
        f.wait_nodes_online(120)
        yield f


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _wait_for_round(path: Path, r: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(rec.get("round") == r for rec in _records(path)):
            return
        time.sleep(0.5)
    raise TimeoutError(f"round {r} not in {path} after {timeout} s")


def test_two_round_study_metrics_model_and_in_process_equivalence(fed, tmp_path):
    cfg = {"dataset": "study", "num_rounds": 2, "min_nodes": 3, "local_epochs": 2, "seed": 11,
           "round_timeout_s": 120.0, "portal_run_id": "7",
           "metrics_path": str(tmp_path / "metrics.jsonl"), "model_dir": str(tmp_path / "model")}
    run_id = control.start_run(APP_DIR, cfg, fed.address, **fed.conn_kwargs())
    assert run_id.isdigit()
    status = fed.wait_run(run_id, 300)
    assert status["status"] == "finished:completed", control.run_logs(run_id, fed.address, **fed.conn_kwargs())[-3000:]
    rounds = [r for r in _records(tmp_path / "metrics.jsonl") if "round" in r]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["run"] == 7 for r in rounds)
    for r in rounds:
        c = {m["node"]: m["value"] for m in r["metrics"] if m["name"] == "c_index"}
        assert set(c) == {"H1", "H2", "H3", "global"}
        assert all(0.0 <= v <= 1.0 for v in c.values())
    model, pre, meta = load_model(tmp_path / "model")
    table = load_dataset(fed.root / "nodes" / "H2" / "data", "study")[0]
    risk = model.predict_risk(pre.transform(table))
    assert risk.shape == (len(table),) and np.isfinite(risk).all()
    # the same study in process, on the very tables the nodes hold, gives the same model
    tables = {n: load_dataset(fed.root / "nodes" / n / "data", "study")[0] for n in ("H1", "H2", "H3")}
    hist = run_in_process({**cfg, "metrics_path": "", "model_dir": ""}, tables)
    with np.load(tmp_path / "model" / "model.npz") as z:
        deployed = [z[f"w{i}"] for i in range(len(z.files))]
    assert len(deployed) == len(hist.weights)
    for a, b in zip(deployed, hist.weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(risk, hist.model(_cfg(cfg)).predict_risk(pre.transform(table)), rtol=1e-4, atol=1e-5)


def test_runs_listed_in_process_match_the_flwr_cli(fed):
    fast = control.list_runs(fed.address, **fed.conn_kwargs())
    cli = control.list_runs(fed.address, in_process=False, **fed.conn_kwargs())
    assert fast, "the first test's run is listed"
    volatile = {"elapsed"}
    key = lambda rows: sorted(({k: v for k, v in r.items() if k not in volatile} for r in rows),
                              key=lambda r: r["run-id"])
    assert key(fast) == key(cli)
    assert all(r["status"].startswith("finished") for r in fast)
    with pytest.raises(control.ControlError, match="127.0.0.1:9"):
        control.list_runs("127.0.0.1:9", root_certificates=fed.pki.ca_cert)
    # one run's status, asked in this process, is the CLI's record too; an unknown run is an error
    run_id = fast[0]["run-id"]
    one = control.run_status(run_id, fed.address, **fed.conn_kwargs())
    one_cli = control.run_status(run_id, fed.address, in_process=False, **fed.conn_kwargs())
    assert (one["status"], one["finished"]) == (one_cli["status"], one_cli["finished"]) == (fast[0]["status"], True)
    unknown = str(max(int(r["run-id"]) for r in fast) + 1)
    with pytest.raises(control.ControlError, match=unknown):
        control.run_status(unknown, fed.address, **fed.conn_kwargs())


def test_runs_started_in_process_match_the_flwr_cli(fed, tmp_path):
    """The portal submits runs from its own process (StartRun with a bundle built once per app
    content); `flwr run` must see the same app bundle and run config."""
    cfg = {"dataset": "study", "num_rounds": 1, "min_nodes": 3, "local_epochs": 1, "seed": 5,
           "round_timeout_s": 120.0, "comparison": False}
    ids = {}
    for how, in_process in (("in_process", True), ("cli", False)):
        metrics = tmp_path / f"{how}.jsonl"
        ids[how] = control.start_run(APP_DIR, {**cfg, "metrics_path": str(metrics)}, fed.address,
                                     in_process=in_process, **fed.conn_kwargs())
        assert fed.wait_run(ids[how], 300)["status"] == "finished:completed"
    rows = {r["run-id"]: r for r in control.list_runs(fed.address, **fed.conn_kwargs())}
    a, b = rows[ids["in_process"]], rows[ids["cli"]]
    assert {k: a[k] for k in ("fab-id", "fab-version", "fab-hash")} == {k: b[k] for k in ("fab-id", "fab-version", "fab-hash")}
    c = [[m for m in r["metrics"] if m["name"] == "c_index"]
         for how in ids for r in _records(tmp_path / f"{how}.jsonl") if r.get("round") == 1]
    assert len(c) == 2 and c[0] == c[1], "the same seeded config gives the same round, however it was submitted"
    with pytest.raises(control.ControlError, match="127.0.0.1:9"):
        control.start_run(APP_DIR, cfg, "127.0.0.1:9", root_certificates=fed.pki.ca_cert)


def _cfg(d):
    from fl_engine.federation import parse_run_config
    return parse_run_config(d)


def test_stop_run_ends_as_stopped(fed, tmp_path):
    cfg = {"dataset": "study", "num_rounds": 200, "min_nodes": 3, "round_timeout_s": 120.0,
           "metrics_path": str(tmp_path / "metrics.jsonl")}
    run_id = control.start_run(APP_DIR, cfg, fed.address, **fed.conn_kwargs())
    _wait_for_round(tmp_path / "metrics.jsonl", 1)
    control.stop_run(run_id, fed.address, **fed.conn_kwargs())
    status = fed.wait_run(run_id, 120)
    assert status["status"] == "finished:stopped"
    assert isinstance(control.run_logs(run_id, fed.address, **fed.conn_kwargs()), str)


def _trained(record: dict) -> set[str]:
    return {m["node"] for m in record["metrics"] if m["name"] == "n_train"}


def test_killed_node_the_run_completes_with_the_others(fed, tmp_path):
    # A generous round timeout: a live node slowed down by a loaded machine must not be
    # mistaken for the dead one (the dead node's message fails as soon as the SuperLink marks
    # it offline, within its heartbeat patience, so the test does not wait the full timeout).
    cfg = {"dataset": "study", "num_rounds": 3, "min_nodes": 2, "round_timeout_s": 120.0,
           "metrics_path": str(tmp_path / "metrics.jsonl")}
    fed.wait_nodes_online(60)
    run_id = control.start_run(APP_DIR, cfg, fed.address, **fed.conn_kwargs())
    _wait_for_round(tmp_path / "metrics.jsonl", 1)
    first = [r for r in _records(tmp_path / "metrics.jsonl") if "round" in r][0]
    assert _trained(first) == {"H1", "H2", "H3"}, (first, control.run_logs(run_id, fed.address, **fed.conn_kwargs())[-4000:])
    fed.nodes["H3"].kill()
    status = fed.wait_run(run_id, 300)
    logs = control.run_logs(run_id, fed.address, **fed.conn_kwargs())
    assert status["status"] == "finished:completed", (_records(tmp_path / "metrics.jsonl")[-1], logs[-4000:])
    last = [r for r in _records(tmp_path / "metrics.jsonl") if "round" in r][-1]
    assert last["round"] == 3
    assert _trained(last) == {"H1", "H2"}, (last, logs[-4000:])
    # the SuperLink's error for the dead node's message drops it: it is not asked again
    dropped = [l for l in logs.splitlines() if "leaving it out of the rest of the run" in l]
    assert dropped and all("node H3 " in l for l in dropped), logs[-4000:]
    # with min_nodes above the nodes left, the run fails and says why
    cfg2 = {**cfg, "min_nodes": 3, "num_rounds": 1, "round_timeout_s": 10.0,
            "metrics_path": str(tmp_path / "m2.jsonl")}
    run2 = control.start_run(APP_DIR, cfg2, fed.address, **fed.conn_kwargs())
    st2 = fed.wait_run(run2, 180)
    assert st2["status"] == "finished:failed", _records(tmp_path / "m2.jsonl")
    err = [r for r in _records(tmp_path / "m2.jsonl") if r.get("type") == "failed"]
    assert err and "min_nodes=3" in err[0]["reason"]


class _Manager(BaseHTTPRequestHandler):
    beats: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Manager.beats.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_fedhaem_node_start_runs_a_supernode_and_sends_heartbeats(fed, tmp_path, node_tables):
    from fl_engine.node.datasets import register_table
    srv = HTTPServer(("127.0.0.1", 0), _Manager)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    keys = ensure_node_keys(tmp_path / "keys")
    node_id = control.register_node(keys.public_key, fed.address, name="H4", **fed.conn_kwargs())
    with pytest.raises(control.KeyAlreadyRegistered, match="already in use"):  # a second time
        control.register_node(keys.public_key, fed.address, name="H4", **fed.conn_kwargs())
    register_table(tmp_path / "data", "mds-local", node_tables["H3"], "MDS")
    (tmp_path / "token").write_text("secret-token\n")
    limits = {"*": {"min_cell_count": 5}, "mds-local": {"purposes": ["analysis"]}}
    (tmp_path / "limits.json").write_text(json.dumps(limits))
    p = subprocess.Popen([sys.executable, "-m", "fl_engine.node.cli", "start", "--policy-file", str(tmp_path / "limits.json"),
                          "--manager", f"http://127.0.0.1:{srv.server_port}", "--superlink", fed.address,
                          "--key-dir", str(tmp_path / "keys"), "--data-dir", str(tmp_path / "data"),
                          "--name", "H4", "--token-file", str(tmp_path / "token"),
                          "--root-certificates", str(fed.pki.ca_cert), "--heartbeat-interval", "1",
                          "--state-dir", str(tmp_path / "state")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if any(b[2].get("flower_node_id") for b in _Manager.beats):
                break
            assert p.poll() is None, p.stdout.read().decode()[-2000:]
            time.sleep(0.5)
        path, auth, beat = [b for b in _Manager.beats if b[2].get("flower_node_id")][-1]
        assert path == "/api/nodes/heartbeat/" and auth == "Token secret-token"
        assert beat["name"] == "H4" and beat["status"] == "online" and beat["flower_node_id"] == node_id
        assert beat["datasets"][0]["name"] == "mds-local"
        assert beat["datasets"][0]["patient_count"] == len(node_tables["H3"])
        assert beat["policy_limits"] == limits  # the operator's local limits, announced as the file has them
        online = {n["node-id"] for n in control.list_nodes(fed.address, **fed.conn_kwargs())
                  if n["status"] == "online"}
        assert node_id in online
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            import os, signal
            os.killpg(p.pid, signal.SIGKILL)
        srv.shutdown()
    assert _Manager.beats[-1][2]["status"] == "offline"
    control.unregister_node(node_id, fed.address, **fed.conn_kwargs())
    status = {n["node-id"]: n["status"] for n in control.list_nodes(fed.address, **fed.conn_kwargs())}
    assert status[node_id] == "unregistered"
