"""Real processes: one hospital node home with two manager profiles serves two managers.

Two SuperLinks (an oncological manager A and a non-oncological manager B, each with its own dev
CA, TLS and SuperNode authentication) and one `fedhaem-node start --home` process running one
SuperNode per profile. Each manager's portal is a small HTTP stand-in here (approvals, heartbeats,
refusals: the node's side of the portal API; the portal's own approval API is tested in
tests/security); everything on the node's side is what a hospital runs.

A run of each manager completes on the node with that manager's dataset; the two profiles hold
different keys and tokens and announce only their own registry; an approval given on manager A
never lets a run of manager B use the dataset, even for the same study number, dataset name,
fingerprint and settings (manager study numbers collide: both portals count from 1).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fl_engine.deploy import control
from fl_engine.deploy.local import APP_DIR, LocalFederation
from fl_engine.federation import parse_run_config
from fl_engine.federation.approval import approval_hash, study_settings
from fl_engine.node.datasets import register_table

pytestmark = pytest.mark.slow

NODE = "hosp-x"


class FakePortal:
    """The node-facing part of one manager's portal: approvals for one token, heartbeats and
    refusals recorded."""

    def __init__(self, token: str):
        self.token, self.approvals = token, []
        self.beats, self.refusals, self.approval_gets, self.bad_auth = [], [], 0, []
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def _auth(self) -> bool:
                ok = self.headers.get("Authorization") == f"Token {portal.token}"
                if not ok:
                    portal.bad_auth.append((self.path, self.headers.get("Authorization")))
                    self.send_response(401)
                    self.end_headers()
                return ok

            def do_GET(self):  # noqa: N802
                if self.path != "/api/nodes/approvals/" or not self._auth():
                    return
                portal.approval_gets += 1
                body = json.dumps({"node": NODE, "approvals": portal.approvals}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._auth():
                    return
                {"/api/nodes/heartbeat/": portal.beats, "/api/nodes/refusals/": portal.refusals}[self.path].append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fl_engine.node.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory, node_tables):
    root = tmp_path_factory.mktemp("multi")
    portals = {"onco": FakePortal("token-onco"), "nononco": FakePortal("token-nononco")}
    home = root / "hospital"
    with LocalFederation(root / "onco", launcher="prefork") as fed_a, \
            LocalFederation(root / "nononco", launcher="prefork") as fed_b:
        feds = {"onco": fed_a, "nononco": fed_b}
        ids, keys = {}, {}
        for name, fed in feds.items():
            (root / f"{name}.token").write_text(portals[name].token + "\n")
            out = _cli("profile", "add", name, "--home", home, "--manager", portals[name].url,
                       "--superlink", fed.address, "--root-certificates", fed.pki.ca_cert,
                       "--token-file", root / f"{name}.token", "--name", NODE)
            assert out.returncode == 0, out.stderr
            keys[name] = out.stdout.strip()
            pub = home / "managers" / name / "keys" / "node_key.pub"
            assert pub.read_text().strip() == keys[name]
            ids[name] = control.register_node(pub, fed.address, name=NODE, **fed.conn_kwargs())
        data = {n: home / "managers" / n / "data" for n in feds}
        fps = {
            "mds": register_table(data["onco"], "mds", node_tables["H1"], "MDS")["fingerprint"],
            # stands in for the non-oncological registry's table (same schema: the engine is the same)
            "registry-b": register_table(data["nononco"], "registry-b", node_tables["H2"], "MDS")["fingerprint"],
            # the same table registered with both managers: same name, same fingerprint
            "shared": register_table(data["onco"], "shared", node_tables["H2"], "MDS")["fingerprint"],
        }
        assert register_table(data["nononco"], "shared", node_tables["H2"], "MDS")["fingerprint"] == fps["shared"]
        proc = subprocess.Popen([sys.executable, "-m", "fl_engine.node.cli", "start", "--home", str(home),
                                 "--heartbeat-interval", "1", "--no-flower-tuning"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not all(any(b.get("flower_node_id") == ids[n] for b in portals[n].beats) for n in feds):
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "the node's two SuperNodes did not come online"
                time.sleep(0.5)
            for n, fed in feds.items():
                fed.node_ids[NODE] = ids[n]
                deadline = time.monotonic() + 60
                while ids[n] not in {x["node-id"] for x in control.list_nodes(fed.address, **fed.conn_kwargs())
                                     if x["status"] == "online"}:
                    assert time.monotonic() < deadline, f"{n}: node not online at its SuperLink"
                    time.sleep(0.5)
            yield {"home": home, "feds": feds, "portals": portals, "ids": ids, "keys": keys, "fps": fps,
                   "proc": proc, "root": root}
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            for p in portals.values():
                p.close()


def _run_cfg(world, manager: str, study: str, dataset: str, tmp: Path, rounds: int = 2) -> tuple[dict, dict]:
    """(flat run config, the approval record its settings need) for a Cox run of `study` on
    `dataset`, this node its only participant."""
    flat = {"dataset": dataset, "num_rounds": rounds, "min_nodes": 1, "seed": 3, "model": "cox",
            "model_params": json.dumps({"penalizer": 0.05}), "feature_groups": "clinical",
            "round_timeout_s": 240.0,  # generous: a loaded machine must not look like a refusal
            "metrics_path": str(tmp / f"{manager}-{study}-{dataset}.jsonl"),
            "study_id": study, "portal_run_id": study,
            "participants": json.dumps([{"node": NODE, "node_id": world["ids"][manager],
                                         "fingerprint": world["fps"][dataset], "version": "1"}])}
    cfg = parse_run_config(flat)
    settings = study_settings(use_case=cfg.use_case, endpoint=cfg.endpoint, dataset=cfg.dataset,
                              features=cfg.features, feature_groups=cfg.feature_groups, model=cfg.model,
                              model_params=cfg.model_params, local_epochs=cfg.local_epochs,
                              privacy={k: getattr(cfg, k) for k in ("min_patients_per_node", "min_cell_count",
                                                                    "dp_enabled", "dp_clip_norm",
                                                                    "dp_noise_multiplier")},
                              max_rounds=rounds)
    flat["study_settings"] = json.dumps(settings)
    approval = {"study": study, "dataset": dataset, "fingerprint": world["fps"][dataset],
                "settings_hash": approval_hash(settings)}
    return flat, approval


def _records(path: str) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def _problems(path: str) -> list[dict]:
    return [r for r in _records(path) if r.get("type") in ("failed", "node_missed")]


def _trained(path: str) -> set[int]:
    return {r["round"] for r in _records(path) if "round" in r
            for m in r["metrics"] if m["node"] == NODE and m["name"] == "n_train"}


def test_each_manager_profile_has_its_own_key_token_and_registry(world):
    keys, portals = world["keys"], world["portals"]
    assert keys["onco"] != keys["nononco"] and keys["onco"].startswith("ecdsa-sha2-nistp384 ")
    assert not portals["onco"].bad_auth and not portals["nononco"].bad_auth  # each got only its own token
    announced = {n: {d["name"] for d in portals[n].beats[-1]["datasets"]} for n in portals}
    assert announced == {"onco": {"mds", "shared"}, "nononco": {"registry-b", "shared"}}
    st = _cli("status", "--home", world["home"], "--json")
    assert st.returncode == 0, st.stderr
    rows = {r["profile"]: r for r in json.loads(st.stdout)["profiles"]}
    assert set(rows) == {"onco", "nononco"}
    for n, r in rows.items():
        assert r["state"] == "online" and r["identity_ok"], r
        assert r["flower_node_id"] == world["ids"][n]
        assert r["manager"] == portals[n].url
    assert rows["onco"]["manager_id"] != rows["nononco"]["manager_id"]
    assert rows["onco"]["public_key_sha256"] != rows["nononco"]["public_key_sha256"]


def test_a_run_of_each_manager_completes_on_the_node_with_its_own_dataset(world, tmp_path):
    """Both managers number their first study "1"; both runs go at once, one per SuperNode."""
    feds, portals = world["feds"], world["portals"]
    cfg_a, appr_a = _run_cfg(world, "onco", "1", "mds", tmp_path)
    cfg_b, appr_b = _run_cfg(world, "nononco", "1", "registry-b", tmp_path)
    portals["onco"].approvals = [appr_a]
    portals["nononco"].approvals = [appr_b]
    t0 = time.monotonic()
    run_a = control.start_run(APP_DIR, cfg_a, feds["onco"].address, **feds["onco"].conn_kwargs())
    run_b = control.start_run(APP_DIR, cfg_b, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    for name, run, cfg in (("onco", run_a, cfg_a), ("nononco", run_b, cfg_b)):
        st = feds[name].wait_run(run, 300)
        logs = control.run_logs(run, feds[name].address, **feds[name].conn_kwargs())
        assert st["status"] == "finished:completed", (name, logs[-3000:], _problems(cfg["metrics_path"]))
        assert _trained(cfg["metrics_path"]) == {1, 2}, (name, _records(cfg["metrics_path"]))
    print(f"two managers' 2-round Cox runs on one node, concurrently: {time.monotonic() - t0:.1f} s")
    assert not portals["onco"].refusals and not portals["nononco"].refusals
    # each run's patient count is its own manager's table (H1 at A, H2 at B)
    n_a = {m["value"] for r in _records(cfg_a["metrics_path"]) if "round" in r for m in r["metrics"]
           if m["node"] == NODE and m["name"] == "n_train"}
    n_b = {m["value"] for r in _records(cfg_b["metrics_path"]) if "round" in r for m in r["metrics"]
           if m["node"] == NODE and m["name"] == "n_train"}
    assert n_a and n_b and n_a.isdisjoint(n_b), (n_a, n_b)


def test_an_approval_given_on_manager_a_never_serves_a_run_of_manager_b(world, tmp_path):
    feds, portals = world["feds"], world["portals"]
    # A approves study 7 on "shared"; B sends a run of study 7 on "shared", same settings, same
    # fingerprint: everything in the approval matches except who gave it.
    cfg_a, appr = _run_cfg(world, "onco", "7", "shared", tmp_path, rounds=1)
    cfg_b, appr_b = _run_cfg(world, "nononco", "7", "shared", tmp_path, rounds=1)
    assert appr == appr_b
    portals["onco"].approvals = [appr]
    portals["nononco"].approvals = []
    gets_a = portals["onco"].approval_gets
    run_b = control.start_run(APP_DIR, cfg_b, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    st = feds["nononco"].wait_run(run_b, 180)
    assert st["status"] != "finished:completed"
    assert _trained(cfg_b["metrics_path"]) == set()
    deadline = time.monotonic() + 30
    while not portals["nononco"].refusals and time.monotonic() < deadline:
        time.sleep(0.5)
    reasons = [r["reason"] for r in portals["nononco"].refusals if r["study"] == "7"]
    assert reasons, portals["nononco"].refusals
    assert "no approval of study 7 on dataset shared" in reasons[0]
    assert "manager profile nononco" in reasons[0] and "other managers never count" in reasons[0]
    assert portals["onco"].approval_gets == gets_a  # B's run never asked A
    assert not portals["onco"].refusals
    # the approval stands where it was given: the same study runs on A
    run_a = control.start_run(APP_DIR, cfg_a, feds["onco"].address, **feds["onco"].conn_kwargs())
    assert feds["onco"].wait_run(run_a, 180)["status"] == "finished:completed"
    assert _trained(cfg_a["metrics_path"]) == {1}
    # and once B approves it too, B's run goes
    portals["nononco"].approvals = [appr_b]
    time.sleep(6)  # past the node's approvals cache (5 s)
    cfg_b2 = {**cfg_b, "metrics_path": str(tmp_path / "b2.jsonl")}
    run_b2 = control.start_run(APP_DIR, cfg_b2, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    assert feds["nononco"].wait_run(run_b2, 180)["status"] == "finished:completed"
    assert _trained(cfg_b2["metrics_path"]) == {1}


def test_a_dataset_registered_only_with_manager_a_is_not_readable_by_a_run_of_manager_b(world, tmp_path):
    """B names A's dataset with its fingerprint and even holds a matching approval of its own:
    B's SuperNode reads only B's registry, where that dataset does not exist."""
    feds, portals = world["feds"], world["portals"]
    cfg_b, appr_b = _run_cfg(world, "nononco", "9", "mds", tmp_path, rounds=1)
    portals["nononco"].approvals = [appr_b]
    time.sleep(6)
    run_b = control.start_run(APP_DIR, cfg_b, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    st = feds["nononco"].wait_run(run_b, 180)
    assert st["status"] != "finished:completed"
    assert _trained(cfg_b["metrics_path"]) == set()
    logs = control.run_logs(run_b, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    failed = [r for r in _records(cfg_b["metrics_path"]) if r.get("type") == "failed"]
    text = logs + json.dumps(failed)
    assert "'mds'" in text and "not registered" in text, text[-3000:]
    assert str(world["home"] / "managers" / "nononco" / "data") in text


def test_a_manager_cannot_make_the_node_run_its_own_clientapp_code(world, tmp_path):
    """Manager B ships a FAB whose ClientApp is its own module, which would read manager A's
    registry (same account) and leave a marker: the node refuses the FAB before installing it."""
    feds, portals = world["feds"], world["portals"]
    app = tmp_path / "evil-app"
    app.mkdir()
    toml = (APP_DIR / "pyproject.toml").read_text()
    assert 'clientapp = "fl_engine.federation.client_app:app"' in toml
    (app / "pyproject.toml").write_text(toml.replace('clientapp = "fl_engine.federation.client_app:app"',
                                                     'clientapp = "peek:app"'))
    marker = tmp_path / "peeked"
    (app / "peek.py").write_text(
        "from pathlib import Path\nfrom flwr.clientapp import ClientApp\n"
        f"Path({str(marker)!r}).write_text('\\n'.join(str(p) for p in "
        f"Path({str(world['home'] / 'managers' / 'onco' / 'data')!r}).rglob('*')))\n"
        "app = ClientApp()\n")
    cfg_b, appr_b = _run_cfg(world, "nononco", "11", "registry-b", tmp_path, rounds=1)
    portals["nononco"].approvals = [appr_b]
    run_b = control.start_run(app, cfg_b, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    st = feds["nononco"].wait_run(run_b, 180)
    assert st["status"] != "finished:completed"
    assert not marker.exists()
    assert _trained(cfg_b["metrics_path"]) == set()
    logs = control.run_logs(run_b, feds["nononco"].address, **feds["nononco"].conn_kwargs())
    failed = [r for r in _records(cfg_b["metrics_path"]) if r.get("type") == "failed"]
    text = logs + json.dumps(failed)
    assert "carries code" in text or "names ClientApp" in text, text[-3000:]
