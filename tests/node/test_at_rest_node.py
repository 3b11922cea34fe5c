"""Encryption at rest on the hospital node (docs/encryption-at-rest.md): the real ETL of a
registry export and a registration through `fedhaem-node`, then every raw file under the node's
data dir and the ETL output folder is read and no patient id, field value, export header or
table header is found in plaintext; the table loads with its registered fingerprint; key
rotation; altered files, missing keys and legacy plaintext tables."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
import pytest

from etl.demo_exports import SCD_COLUMNS, scd_hospital_export, write_scd_export
from etl.pipeline import run_etl
from etl.registry import DatasetRegistry
from etl.table import fingerprint
from fedhaem_kernel import atrest
from fedhaem_kernel.atrest import KeyringError, LocalKeyring, MissingKeyring, TamperedFile, UnknownKey
from fl_engine.cohort import generate_scd_cohort
from fl_engine.deploy.pki import ensure_dev_pki
from fl_engine.node.cli import main
from fl_engine.node.datasets import (
    ENCRYPTION_ENV, KEYS_ENV, KEYS_FILE_ENV, keyring_path, load_dataset, open_registry, register_table,
)
from fl_engine.node.profiles import add_profile

N = 120


@pytest.fixture(autouse=True)
def _no_node_key_env(monkeypatch):
    for name in (KEYS_ENV, KEYS_FILE_ENV, ENCRYPTION_ENV, "FEDHAEM_NODE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cohort():
    return generate_scd_cohort(N, seed=11)


@pytest.fixture
def export(tmp_path, cohort):
    """The hospital's registry export, with one impossible Hb so that quarantine.csv and the
    quality report name a patient and the value."""
    csv, mapping = write_scd_export(cohort, tmp_path / "export")
    df = pd.read_csv(csv, sep=";", dtype=str, keep_default_na=False)
    df.loc[5, SCD_COLUMNS["hbf"]] = "123.4"
    df.to_csv(csv, sep=";", index=False, encoding="utf-8")
    return csv, mapping


@pytest.fixture
def node(tmp_path, export, capsys):
    """ETL + registration through the node's commands, with the node's own keyring."""
    csv, mapping = export
    data, out = tmp_path / "node" / "data", tmp_path / "etl-out"
    assert main(["etl", "--use-case", "scd", "--source", str(csv), "--mapping", str(mapping), "--out", str(out),
                 "--data-dir", str(data)]) == 0
    assert main(["register", "--name", "scd-local", "--dataset", str(out), "--data-dir", str(data)]) == 0
    capsys.readouterr()
    return data, out


def _secrets(cohort: pd.DataFrame, export_csv: Path) -> list[bytes]:
    """Byte strings that would give patient data away: ids, the export's and the table's header
    lines, whole rows, FHIR and Parquet markers, the quarantined value."""
    ids = [str(x) for x in cohort["patient_id"]]
    lines = export_csv.read_text(encoding="utf-8").splitlines()
    table_header = ",".join(cohort.columns)
    out = [i.encode() for i in ids] + [lines[0].encode(), lines[1].encode(), lines[2].encode()]
    out += [SCD_COLUMNS["hb"].encode(), table_header.encode(), b"resourceType", b"PAR1", b"123.4",
            b"<table", b"patient_id,"]
    return out


def _raw_files(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob("*") if p.is_file()]


def _assert_no_plaintext(roots, secrets):
    files = _raw_files(*roots)
    assert files
    for p in files:
        raw = p.read_bytes()
        for s in secrets:
            assert s not in raw, f"{s!r} in plaintext in {p}"


def test_etl_and_registry_files_hold_no_plaintext_patient_data(node, export, cohort, tmp_path):
    data, out = node
    csv, mapping = export
    secrets = _secrets(cohort, csv)
    assert any(s in csv.read_bytes() for s in secrets)  # the patterns are real: the export has them
    _assert_no_plaintext([data, out], secrets)
    # what is encrypted and what is not (metadata only)
    for name in ("bundles.ndjson", "table.parquet", "table.csv", "quality.json", "quality.html", "quarantine.csv"):
        assert atrest.is_encrypted(out / name), name
    assert json.loads((out / "manifest.json").read_text())["patient_count"] == N  # plaintext metadata
    assert b"123.4" in atrest.read_file(out / "quarantine.csv", LocalKeyring.from_file(keyring_path(data)))
    version = data / "datasets" / "scd-local" / "v1"
    for name in ("table.parquet", "table.csv", "quality.json", "quality.html"):
        assert atrest.is_encrypted(version / name), name
    reg = json.loads((data / "registry.json").read_text())
    entry = reg["datasets"][0]
    assert entry["extra"] == {"at_rest": "encrypted"}
    # the keyring: beside the data dir (not in it), made at first use, owner-only
    key_file = keyring_path(data)
    assert key_file == data.parent / "secrets" / "at_rest_keys.json" and key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not list(data.rglob("at_rest_keys.json"))
    # the table loads, with the fingerprint the manifest and the registry hold, which is the
    # fingerprint of the same ETL run without encryption (hospitals approve fingerprints)
    plain = run_etl("scd", [csv], tmp_path / "plain-out", mapping=mapping)
    assert not atrest.is_encrypted(plain.out_dir / "table.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    df, meta = load_dataset(data, "scd-local")
    assert fingerprint(df) == meta["fingerprint"] == manifest["fingerprint"] == plain.manifest["fingerprint"]
    pd.testing.assert_frame_equal(df, pd.read_parquet(plain.out_dir / "table.parquet"))


def test_report_decrypts_and_html_is_copied_out_for_the_browser(node, capsys):
    data, out = node
    assert main(["report", str(out), "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["patients"] == N
    assert main(["report", str(out), "--data-dir", str(data), "--html"]) == 0
    printed = capsys.readouterr()
    html = Path(printed.out.strip().rsplit("HTML report: ", 1)[1])
    assert html.parent != out and "<html" in html.read_text().lower()
    assert stat.S_IMODE(html.stat().st_mode) == 0o600 and "encrypted at rest" in printed.err
    assert main(["scores", "--dataset", str(out), "--data-dir", str(data), "--json"]) == 0


def test_rotation_rewraps_every_file_and_keeps_them_readable(node, capsys):
    data, out = node
    old = LocalKeyring.from_file(keyring_path(data)).current
    files = [*(data / "datasets").rglob("*.parquet"), out / "bundles.ndjson", out / "quarantine.csv"]
    before = {}
    for p in files:
        with open(p, "rb") as f:
            before[p] = p.read_bytes()[atrest.read_header(f, p).size:]
    assert main(["rotate-at-rest-keys", "--data-dir", str(data), "--etl-out", str(out), "--new-key", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["keyrings"][0]
    new = res["new_key"]
    assert new != old and res["current_key"] == new and res["errors"] == [] and res["changed"] >= 10
    assert set(res["key_ids"]) == {new}
    for p, body in before.items():
        with open(p, "rb") as f:
            h = atrest.read_header(f, p)
        assert h.key_id == new
        assert p.read_bytes()[h.size:] == body  # a header rewrite: the chunks are untouched
    df, meta = load_dataset(data, "scd-local")
    assert fingerprint(df) == meta["fingerprint"]
    assert main(["report", str(out), "--data-dir", str(data), "--json"]) == 0
    capsys.readouterr()
    # the old key retired: gone from the key file, everything still reads
    assert main(["rotate-at-rest-keys", "--data-dir", str(data), "--etl-out", str(out), "--retire", old]) == 0
    assert capsys.readouterr().out.count(f"retired key {old}") == 1
    assert LocalKeyring.from_file(keyring_path(data)).key_ids() == [new]
    assert fingerprint(load_dataset(data, "scd-local")[0]) == meta["fingerprint"]
    # a re-run changes nothing
    assert main(["rotate-at-rest-keys", "--data-dir", str(data), "--etl-out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keyrings"][0]["changed"] == 0


def test_retire_rewraps_first_and_files_left_out_then_name_the_retired_key(node, capsys):
    data, out = node
    old = LocalKeyring.from_file(keyring_path(data)).current
    ring = LocalKeyring.from_file(keyring_path(data))
    ring.add_key()  # a new key, but no rotation of the files yet: the census still counts the old one
    assert main(["rotate-at-rest-keys", "--data-dir", str(data), "--retire", old]) == 0  # rotates first
    assert old not in LocalKeyring.from_file(keyring_path(data)).keys
    # the ETL output was not named: its files are still under the retired key, and say so
    with pytest.raises(UnknownKey, match=f"{out / 'table.parquet'}.*{old}"):
        atrest.read_file(out / "table.parquet", LocalKeyring.from_file(keyring_path(data)))


def test_an_altered_file_names_the_file(node):
    data, _ = node
    p = data / "datasets" / "scd-local" / "v1" / "table.parquet"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(TamperedFile, match=str(p)):
        load_dataset(data, "scd-local")


def test_a_plaintext_table_where_an_encrypted_one_was_registered_is_refused(node, cohort):
    data, _ = node
    p = data / "datasets" / "scd-local" / "v1" / "table.parquet"
    df, _meta = load_dataset(data, "scd-local")
    df.to_parquet(p, index=False)  # same rows, written in plaintext over the encrypted file
    with pytest.raises(TamperedFile, match=f"{p}.*plaintext"):
        load_dataset(data, "scd-local")


def test_missing_keys_name_what_is_missing(node, monkeypatch, tmp_path):
    data, out = node
    table = data / "datasets" / "scd-local" / "v1" / "table.parquet"
    # no keyring given at all: the file
    with pytest.raises(MissingKeyring, match=str(table)):
        DatasetRegistry(data).load_table("scd-local")
    # a key file named in the environment that is not there: the key file and the variable
    monkeypatch.setenv(KEYS_FILE_ENV, str(tmp_path / "gone.json"))
    with pytest.raises(KeyringError, match=f"{tmp_path / 'gone.json'}.*{KEYS_FILE_ENV}"):
        load_dataset(data, "scd-local")
    # a keyring without the key the file was written with: the file and the key id
    monkeypatch.delenv(KEYS_FILE_ENV)
    kid = LocalKeyring.from_file(keyring_path(data)).current
    other = LocalKeyring.create(tmp_path / "other.json")
    monkeypatch.setenv(KEYS_ENV, other.to_json())
    with pytest.raises(UnknownKey, match=f"{table}.*{kid}"):
        load_dataset(data, "scd-local")
    # the node's commands say it too, without a traceback
    assert main(["report", str(out), "--data-dir", str(data)]) == 2


def test_legacy_plaintext_tables_are_read_and_migrated_in_place(tmp_path, cohort, capsys):
    data = tmp_path / "old-node" / "data"
    entry, _ = DatasetRegistry(data).register("scd-old", cohort, "SCD")  # written before encryption
    table = data / entry.table_path
    assert not atrest.is_encrypted(table)
    df, meta = load_dataset(data, "scd-old")  # readable (logged), fingerprint checked
    assert fingerprint(df) == entry.fingerprint
    assert main(["encrypt-at-rest", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data_dirs"][0]["census"] == {"plaintext": 2}  # parquet + csv
    assert main(["encrypt-at-rest", "--data-dir", str(data), "--migrate"]) == 0
    capsys.readouterr()
    assert atrest.is_encrypted(table) and atrest.is_encrypted(table.with_suffix(".csv"))
    _assert_no_plaintext([data], [str(x).encode() for x in cohort["patient_id"]] + [b"PAR1"])
    df2, _ = load_dataset(data, "scd-old")
    assert fingerprint(df2) == entry.fingerprint
    assert main(["encrypt-at-rest", "--data-dir", str(data), "--migrate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data_dirs"][0]["changed"] == 0  # safe to re-run


def test_nodes_made_by_the_deployment_helpers_encrypt_by_default(tmp_path, cohort):
    meta = register_table(tmp_path / "n" / "data", "scd", cohort, "SCD")  # fl_engine.deploy.local's path
    table = tmp_path / "n" / "data" / meta["table_path"]
    assert atrest.is_encrypted(table) and (tmp_path / "n" / "secrets" / "at_rest_keys.json").is_file()
    assert fingerprint(load_dataset(tmp_path / "n" / "data", "scd")[0]) == meta["fingerprint"]
    with open(table, "rb") as f:
        assert atrest.read_header(f, table).key_id == open_registry(tmp_path / "n" / "data").keys.current_key_id


def test_keys_from_the_environment_and_encryption_switched_off(tmp_path, cohort, monkeypatch):
    ring = LocalKeyring.create(tmp_path / "ring.json")
    monkeypatch.setenv(KEYS_ENV, ring.to_json())
    meta = register_table(tmp_path / "data", "scd", cohort, "SCD")
    assert not (tmp_path / "secrets").exists()  # no key file made: the environment holds the keys
    with open(tmp_path / "data" / meta["table_path"], "rb") as f:
        assert atrest.read_header(f, "t").key_id == ring.current
    monkeypatch.setenv(ENCRYPTION_ENV, "false")
    meta2 = register_table(tmp_path / "data2", "scd", cohort.iloc[:50], "SCD")
    assert not atrest.is_encrypted(tmp_path / "data2" / meta2["table_path"])
    assert fingerprint(load_dataset(tmp_path / "data", "scd")[0]) == meta["fingerprint"]  # still read
    monkeypatch.setenv(ENCRYPTION_ENV, "maybe")
    with pytest.raises(KeyringError, match=ENCRYPTION_ENV):
        load_dataset(tmp_path / "data", "scd")


def test_a_profile_keyring_encrypts_the_etl_output_it_registers(tmp_path, export, capsys):
    csv, mapping = export
    token = tmp_path / "tok"
    token.write_text("t\n")
    home = tmp_path / "home"
    prof = add_profile(home, "onco", manager="https://a.example", superlink="127.0.0.1:9092",
                       root_certificates=ensure_dev_pki(tmp_path / "pki").ca_cert, token_file=token,
                       node_name="hosp-x")
    out = tmp_path / "o"
    assert main(["etl", "--use-case", "scd", "--source", str(csv), "--mapping", str(mapping), "--out", str(out),
                 "--home", str(home), "--profile", "onco"]) == 0
    assert main(["register", "--name", "scd", "--dataset", str(out), "--home", str(home), "--profile", "onco",
                 "--no-announce"]) == 0
    assert (prof.folder / "secrets" / "at_rest_keys.json").is_file()
    assert atrest.is_encrypted(prof.data_dir / "datasets" / "scd" / "v1" / "table.parquet")
    assert main(["report", str(out), "--home", str(home), "--profile", "onco", "--json"]) == 0
