"""Deployment pieces that need no running process: PKI, node keys, CLI parsing, datasets."""
import ipaddress
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fl_engine.deploy.control import _last_json
from fl_engine.deploy.pki import ensure_dev_pki, ensure_node_keys
from fl_engine.node import cli
from fl_engine.node.datasets import list_datasets, load_dataset, register_table
from fl_engine.node.heartbeat import heartbeat_payload, send_heartbeat


def test_dev_pki_is_created_once_with_loopback_sans(tmp_path):
    pki = ensure_dev_pki(tmp_path / "pki")
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert (pki.server_key.stat().st_mode & 0o777) == 0o600
    before = pki.server_cert.read_bytes()
    assert ensure_dev_pki(tmp_path / "pki").server_cert.read_bytes() == before


def test_node_keys_are_p384_in_the_format_flower_loads(tmp_path, capsys):
    assert cli.main(["keygen", "--key-dir", str(tmp_path / "k")]) == 0
    printed = capsys.readouterr().out.strip()
    keys = ensure_node_keys(tmp_path / "k")
    assert printed == keys.public_text()
    priv = load_ssh_private_key(keys.private_key.read_bytes(), None)
    pub = load_ssh_public_key(printed.encode())
    assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp384r1"
    assert pub.public_numbers() == priv.public_key().public_numbers()
    assert (keys.private_key.stat().st_mode & 0o777) == 0o600


def test_start_refuses_without_keys(tmp_path, capsys):
    code = cli.main(["start", "--manager", "http://127.0.0.1:9", "--superlink", "127.0.0.1:9",
                     "--key-dir", str(tmp_path / "none"), "--data-dir", str(tmp_path / "d")])
    assert code == 2 and "keygen" in capsys.readouterr().err


def test_last_json_skips_cli_noise():
    assert _last_json('Loading...\n{"success": true, "run-id": 18446744073709551615}\n') == \
        {"success": True, "run-id": 18446744073709551615}
    assert _last_json("no json here") is None


def test_registry_and_heartbeat_payload(tmp_path, node_tables):
    meta = register_table(tmp_path / "data", "mds", node_tables["H3"], "MDS")
    assert meta["patient_count"] == len(node_tables["H3"])
    df, m = load_dataset(tmp_path / "data", "mds")
    assert len(df) == len(node_tables["H3"]) and m["fingerprint"] == meta["fingerprint"]
    assert load_dataset(tmp_path / "data", "mds", str(meta["version"]))[1]["version"] == meta["version"]
    with pytest.raises(LookupError, match="not registered"):
        load_dataset(tmp_path / "data", "other")
    payload = heartbeat_payload("H3", tmp_path / "data", "online", flower_node_id=18446744073709551615)
    assert payload["flower_node_id"] == "18446744073709551615"
    assert payload["datasets"] == list_datasets(tmp_path / "data")
    assert set(payload["datasets"][0]) == {"name", "version", "use_case", "patient_count", "fingerprint"}
    json.dumps(payload)


def test_heartbeat_failure_is_not_fatal():
    assert send_heartbeat("http://127.0.0.1:9", "t", {"name": "x"}, timeout=1) is False


def test_app_bundle_is_built_once_per_content_of_the_app(tmp_path):
    import shutil

    from fl_engine.deploy import control
    from fl_engine.deploy.local import APP_DIR

    app = tmp_path / "app"
    shutil.copytree(APP_DIR, app)
    first = control.app_bundle(app)
    assert control.app_bundle(app) is first  # cached: not rebuilt for the next run
    fab, digest, fab_id, version = first
    assert fab[:2] == b"PK" and len(digest) == 64 and (fab_id, version) == ("fedhaem/fedhaem-study", "0.1.0")
    readme = app / "README.md"
    readme.write_text(readme.read_text() + "\nedited\n")
    again = control.app_bundle(app)
    assert again is not first and again[1] != digest  # an edited app is a new bundle
    (app / "pyproject.toml").write_text("not toml [")
    with pytest.raises(Exception, match="pyproject.toml|toml|TOML"):
        control.app_bundle(app)
