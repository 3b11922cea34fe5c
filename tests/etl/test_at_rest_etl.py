"""Encryption at rest in the ETL and the registry (etl takes a KeyProvider; it reads no node
configuration): outputs holding patient rows are encrypted when a keyring is given, the
manifest stays metadata in plaintext, fingerprints do not change, encrypted FHIR output is read
back as input with the keyring and refused, naming the file, without it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from etl.cli import main as etl_main
from etl.errors import EtlError
from etl.pipeline import run_etl
from etl.registry import DatasetRegistry
from etl.table import fingerprint, read_table_file
from fedhaem_kernel import atrest
from fedhaem_kernel.atrest import LocalKeyring, MissingKeyring

from .synth import canonical_cohort

PATIENT_FILES = ("bundles.ndjson", "table.parquet", "table.csv", "quality.json", "quality.html", "quarantine.csv")


@pytest.fixture
def ring(tmp_path):
    return LocalKeyring.create(tmp_path / "keys" / "ring.json")


@pytest.fixture
def source(tmp_path):
    df = canonical_cohort(n=30, seed=31)
    df.to_csv(tmp_path / "h.csv", index=False)
    return df


def test_outputs_encrypted_with_a_keyring_and_the_fingerprint_unchanged(tmp_path, ring, source):
    plain = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "plain")
    enc = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "enc", keys=ring)
    assert enc.manifest["fingerprint"] == plain.manifest["fingerprint"]
    for name in PATIENT_FILES:
        assert atrest.is_encrypted(enc.out_dir / name) and not atrest.is_encrypted(plain.out_dir / name), name
    for name in ("table.csv", "quarantine.csv"):  # the same plaintext (the others carry run ids and times)
        assert atrest.read_file(enc.out_dir / name, ring) == (plain.out_dir / name).read_bytes(), name
    manifest = json.loads((enc.out_dir / "manifest.json").read_text())  # metadata, plaintext
    assert manifest["fingerprint"] == plain.manifest["fingerprint"]
    ids = [str(x).encode() for x in source["patient_id"]]
    for p in enc.out_dir.iterdir():
        raw = p.read_bytes()
        assert not any(i in raw for i in ids), p
    df = read_table_file(enc.out_dir / "table.parquet", ring)
    assert fingerprint(df) == plain.manifest["fingerprint"]
    pd.testing.assert_frame_equal(read_table_file(enc.out_dir / "table.csv", ring),
                                  read_table_file(plain.out_dir / "table.csv"))
    with pytest.raises(MissingKeyring, match=str(enc.out_dir / "table.parquet")):
        read_table_file(enc.out_dir / "table.parquet")


def test_encrypted_bundles_read_back_as_input(tmp_path, ring, source):
    first = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "a", keys=ring)
    again = run_etl("mds", [first.out_dir / "bundles.ndjson"], tmp_path / "b", keys=ring)
    assert again.manifest["fingerprint"] == first.manifest["fingerprint"]
    with pytest.raises(EtlError, match="bundles.ndjson.*no keyring"):
        run_etl("mds", [first.out_dir / "bundles.ndjson"], tmp_path / "c")
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_registry_with_a_keyring_encrypts_and_checks_the_plaintext_fingerprint(tmp_path, ring, source):
    out = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "o", keys=ring).out_dir
    reg = DatasetRegistry(tmp_path / "node", keys=ring)
    e, created = reg.register_etl_output("d", out)
    assert created and e.extra == {"at_rest": "encrypted"}
    folder = tmp_path / "node" / "datasets" / "d" / "v1"
    assert {p.name for p in folder.iterdir() if atrest.is_encrypted(p)} == {
        "table.parquet", "table.csv", "quality.json", "quality.html"}
    assert not atrest.is_encrypted(folder / "manifest.json")
    assert fingerprint(reg.load_table("d")) == e.fingerprint
    assert reg.at_rest_files() == sorted(p for p in folder.iterdir() if p.name != "manifest.json")
    # a plaintext ETL output registered with a keyring: its reports are encrypted on the way in
    out2 = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "o2").out_dir
    reg2 = DatasetRegistry(tmp_path / "node2", keys=ring)
    reg2.register_etl_output("d", out2)
    assert atrest.is_encrypted(tmp_path / "node2" / "datasets" / "d" / "v1" / "quality.json")


def test_standalone_cli_encrypts_only_with_keys_file(tmp_path, ring, source, capsys):
    assert etl_main(["etl", "--use-case", "mds", "--source", str(tmp_path / "h.csv"), "--out", str(tmp_path / "p")]) == 0
    assert not atrest.is_encrypted(tmp_path / "p" / "table.parquet")
    assert etl_main(["etl", "--use-case", "mds", "--source", str(tmp_path / "h.csv"), "--out", str(tmp_path / "e"),
                     "--keys-file", str(ring.path)]) == 0
    assert atrest.is_encrypted(tmp_path / "e" / "quarantine.csv")
    capsys.readouterr()
    assert etl_main(["report", str(tmp_path / "e"), "--json"]) == 2
    assert "no keyring" in capsys.readouterr().err
    assert etl_main(["report", str(tmp_path / "e"), "--json", "--keys-file", str(ring.path)]) == 0
    assert json.loads(capsys.readouterr().out)["patients"] == 30
