"""Manager profiles of a node home (fl_engine.node.profiles) and approvals bound to a manager's
identity (fl_engine.node.approvals): files and keys only, no Flower process."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fl_engine.deploy.pki import ensure_dev_pki
from fl_engine.federation.approval import ParticipationRefused
from fl_engine.node.approvals import ensure_approved, fetch_approvals, manager_id_of
from fl_engine.node.profiles import (
    ProfileError, add_profile, list_profile_names, load_profile, load_profiles, manager_identity,
    profile_state,
)

DEAD_URL = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def cas(tmp_path):
    return {n: ensure_dev_pki(tmp_path / f"pki-{n}").ca_cert for n in ("a", "b")}


@pytest.fixture
def token(tmp_path):
    t = tmp_path / "tok"
    t.write_text("secret\n")
    return t


def _add(home, name, ca, token, url="https://a.example", **kw):
    return add_profile(home, name, manager=url, superlink="127.0.0.1:9092", root_certificates=ca,
                       token_file=token, node_name="hosp-x", **kw)


def test_the_identity_is_the_url_and_the_tls_root(cas):
    a = manager_identity("https://onco.example", cas["a"])
    assert a == manager_identity("HTTPS://Onco.Example/", cas["a"])  # same manager, spelt differently
    assert a != manager_identity("https://onco.example", cas["b"])  # same URL, another CA
    assert a != manager_identity("https://scd.example", cas["a"])
    assert a.startswith("mgr-") and len(a) == 36


def test_each_profile_has_its_own_folder_keys_token_and_registry(tmp_path, cas, token):
    home = tmp_path / "home"
    onco = _add(home, "onco", cas["a"], token)
    scd = _add(home, "scd", cas["b"], token, url="https://scd.example")
    assert onco.folder == home / "managers" / "onco"
    assert stat.S_IMODE(onco.token_file.stat().st_mode) == 0o600 and onco.token() == "secret"
    assert onco.key_dir != scd.key_dir and onco.data_dir != scd.data_dir
    assert (onco.key_dir / "node_key.pub").read_text() != (scd.key_dir / "node_key.pub").read_text()
    assert onco.config.manager_id != scd.config.manager_id
    assert list_profile_names(home) == ["onco", "scd"]
    opts = onco.node_options()
    assert opts["manager-id"] == onco.config.manager_id and opts["profile"] == "onco"
    assert Path(opts["approvals-dir"]) == onco.approvals_dir.resolve()
    assert manager_id_of(opts) == onco.config.manager_id


def test_profiles_never_share_a_key_pair_or_a_registry(tmp_path, cas, token):
    home = tmp_path / "home"
    onco = _add(home, "onco", cas["a"], token)
    with pytest.raises(ProfileError, match="own SuperNode key pair"):
        _add(home, "scd", cas["b"], token, key_dir=onco.key_dir)
    with pytest.raises(ProfileError, match="own registry"):
        _add(home, "scd", cas["b"], token, data_dir=onco.data_dir)
    with pytest.raises(ProfileError, match="already exists"):
        _add(home, "onco", cas["a"], token)
    with pytest.raises(ProfileError, match="profile name"):
        _add(home, "Onco/../x", cas["a"], token)
    with pytest.raises(ProfileError, match="--root-certificates .*no such file"):
        _add(home, "x", tmp_path / "missing.crt", token)
    assert list_profile_names(home) == ["onco"]  # nothing half-made


def test_an_existing_single_manager_node_is_adopted_as_the_default_profile_without_moving(tmp_path, cas, token):
    from fl_engine.deploy.pki import ensure_node_keys
    from fl_engine.node.datasets import register_table
    from tests.federation.conftest import _small_cohort

    old = tmp_path / "old-node"
    keys = ensure_node_keys(old / "keys")
    before = keys.public_text()
    register_table(old / "data", "mds", _small_cohort(60, 1), "MDS")
    home = tmp_path / "home"
    prof = _add(home, "default", cas["a"], token, key_dir=old / "keys", data_dir=old / "data")
    assert prof.folder == home and load_profile(home, "default").key_dir == (old / "keys").resolve()
    assert keys.public_text() == before  # the key the manager approved is kept
    assert profile_state(prof)["datasets"] == ["mds v1"]
    scd = _add(home, "scd", cas["b"], token, url="https://scd.example")
    assert list_profile_names(home) == ["default", "scd"] and profile_state(scd)["datasets"] == []


def test_a_broken_profile_file_names_the_file_and_field(tmp_path, cas, token):
    home = tmp_path / "home"
    prof = _add(home, "onco", cas["a"], token)
    body = json.loads((prof.folder / "profile.json").read_text())
    (prof.folder / "profile.json").write_text(json.dumps({**body, "superlink": "nowhere"}))
    with pytest.raises(ProfileError, match=r"managers/onco/profile.json: superlink: .*HOST:PORT"):
        load_profile(home, "onco")
    with pytest.raises(ProfileError, match="no profile 'scd'"):
        load_profile(home, "scd")
    with pytest.raises(ProfileError, match="has no profile"):
        load_profiles(tmp_path / "empty")


def test_a_replaced_tls_root_is_caught_and_its_approvals_not_used(tmp_path, cas, token):
    prof = _add(tmp_path / "home", "onco", cas["a"], token)
    assert prof.check_identity() == prof.config.manager_id
    prof.root_certificates.write_bytes(cas["b"].read_bytes())  # someone swaps the CA file
    with pytest.raises(ProfileError, match="not the one pinned"):
        prof.check_identity()
    assert profile_state(prof)["identity_ok"] is False
    with pytest.raises(ParticipationRefused, match="not the one pinned"):
        manager_id_of(prof.node_options())


def _store(prof, ident, approvals):
    prof.approvals_dir.mkdir(parents=True, exist_ok=True)
    (prof.approvals_dir / "approvals.json").write_text(json.dumps(
        {"manager": prof.config.manager, "manager_id": ident, "approvals": approvals}))


def _node_cfg(prof, **kw):
    return {**prof.node_options(), "approval-cache-s": "3600", "approval-retry-s": "0", **kw}


def test_a_stored_list_is_used_only_under_the_identity_it_was_fetched_under(tmp_path, cas, token):
    home = tmp_path / "home"
    a = _add(home, "onco", cas["a"], token, url=DEAD_URL)
    b = _add(home, "scd", cas["b"], token, url=DEAD_URL)  # same URL, another manager (CA)
    appr = {"study": "1", "dataset": "mds", "fingerprint": "f" * 64, "settings_hash": "h" * 64,
            "manager_id": "mgr-whatever-the-manager-says"}
    _store(a, a.config.manager_id, [appr])
    got = fetch_approvals(_node_cfg(a))
    assert got == [{**appr, "manager_id": a.config.manager_id}]  # tagged by the node, not the manager
    # B's SuperNode pointed (by mistake or on purpose) at A's store: not read, B's manager is asked
    with pytest.raises(ParticipationRefused, match="did not answer"):
        fetch_approvals(_node_cfg(b, **{"approvals-dir": str(a.approvals_dir)}))
    # a store in the pre-identity format (a bare list) is not used by a profile either
    (b.approvals_dir / "approvals.json").write_text(json.dumps([appr]))
    with pytest.raises(ParticipationRefused, match="did not answer"):
        fetch_approvals(_node_cfg(b))


def test_a_refusal_names_the_manager_profile(tmp_path, cas, token, monkeypatch):
    from tests.federation.test_approval import _approval, _cfg, FP

    prof = _add(tmp_path / "home", "scd", cas["b"], token, url=DEAD_URL)
    _store(prof, prof.config.manager_id, [_approval(study="8")])
    monkeypatch.setattr("fl_engine.node.approvals.report_refusal", lambda *a, **k: None)
    with pytest.raises(ParticipationRefused, match=r"no approval of study 7 .*manager profile scd.*other managers"):
        ensure_approved(_node_cfg(prof), _cfg(), "hosp-a", FP)
    _store(prof, prof.config.manager_id, [_approval()])
    ensure_approved(_node_cfg(prof), _cfg(), "hosp-a", FP)  # its own manager's approval: served


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fl_engine.node.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_the_cli_adds_profiles_and_lists_them(tmp_path, cas, token):
    home = tmp_path / "home"
    out = _cli("profile", "add", "onco", "--home", home, "--manager", "https://onco.example",
               "--superlink", "127.0.0.1:9092", "--root-certificates", cas["a"], "--token-file", token,
               "--name", "hosp-x")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (home / "managers/onco/keys/node_key.pub").read_text().strip()
    st = _cli("status", "--home", home)
    assert st.returncode == 0 and "onco: never started; node hosp-x" in st.stdout, st
    assert "datasets: none registered" in st.stdout
    clash = _cli("start", "--home", home, "--manager", "https://x.example")
    assert clash.returncode == 2 and "drop --manager" in clash.stderr
    none = _cli("start", "--home", tmp_path / "empty")
    assert none.returncode == 2 and "has no profile" in none.stderr
    legacy = _cli("start", "--manager", "https://x.example")
    assert legacy.returncode == 2 and "needs --superlink, --key-dir, --data-dir" in legacy.stderr


def test_register_with_a_profile_fills_only_that_manager_s_registry_and_announces_to_it(tmp_path, cas, token):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from etl.pipeline import run_etl
    from fl_engine.node.cli import main
    from tests.etl.synth import canonical_cohort

    posts = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            posts.append((self.server.server_port, self.headers.get("Authorization"),
                          json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), H) for _ in range(2)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        home = tmp_path / "home"
        onco = _add(home, "onco", cas["a"], token, url=f"http://127.0.0.1:{servers[0].server_port}")
        (tmp_path / "tok-b").write_text("other-token\n")
        scd = _add(home, "scd", cas["b"], tmp_path / "tok-b", url=f"http://127.0.0.1:{servers[1].server_port}")
        canonical_cohort(n=20, seed=2).to_csv(tmp_path / "h.csv", index=False)
        run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
        assert main(["register", "--home", str(home), "--profile", "onco", "--name", "mds",
                     "--dataset", str(tmp_path / "out")]) == 0
        assert profile_state(onco)["datasets"] == ["mds v1"] and profile_state(scd)["datasets"] == []
        assert [(p[0], p[1], p[2]["name"]) for p in posts] == [(servers[0].server_port, "Token secret", "mds")]
        # locally only, then the flags that the profile owns are refused
        assert main(["register", "--home", str(home), "--profile", "scd", "--name", "mds",
                     "--dataset", str(tmp_path / "out"), "--no-announce"]) == 0
        assert profile_state(scd)["datasets"] == ["mds v1"] and len(posts) == 1
        assert main(["register", "--home", str(home), "--profile", "scd", "--name", "x",
                     "--dataset", str(tmp_path / "out"), "--data-dir", str(onco.data_dir)]) == 2
        assert main(["register", "--profile", "scd", "--name", "x", "--dataset", str(tmp_path / "out")]) == 2
        assert profile_state(onco)["datasets"] == ["mds v1"]
    finally:
        for srv in servers:
            srv.shutdown()
