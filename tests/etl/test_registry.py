"""Local dataset registry: versions by fingerprint, verified loads, all-or-nothing writes."""
import json
import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.pipeline import run_etl
from etl.registry import DatasetRegistry, FingerprintMismatch, RegistryError
from etl.table import fingerprint

from .synth import canonical_cohort


@pytest.fixture()
def etl_out(tmp_path):
    canonical_cohort(n=25, seed=1).to_csv(tmp_path / "h.csv", index=False)
    return run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out").out_dir


def test_register_versions_and_fingerprint(tmp_path, etl_out):
    reg = DatasetRegistry(tmp_path / "node")
    e1, created = reg.register_etl_output("mds-local", etl_out)
    assert created and e1.version == 1 and e1.patient_count == 25 and e1.use_case == "MDS"
    again, created = reg.register_etl_output("mds-local", etl_out)
    assert not created and again.version == 1
    df = reg.load_table("mds-local", 1)
    assert fingerprint(df) == e1.fingerprint and len(df) == 25
    changed = df.copy()
    changed.loc[0, "hb"] = changed.loc[0, "hb"] + 0.5
    e2, created = reg.register("mds-local", changed, "mds", {"patients": 25})
    assert created and e2.version == 2 and e2.fingerprint != e1.fingerprint
    assert [e.version for e in reg.list()] == [1, 2]
    assert reg.get("mds-local").version == 2 and reg.get("mds-local", 1).fingerprint == e1.fingerprint
    pd.testing.assert_frame_equal(reg.load_table("mds-local", 1), df)  # v1 untouched
    assert (tmp_path / "node" / "datasets" / "mds-local" / "v1" / "quality.json").exists()


def test_tampered_table_is_refused(tmp_path, etl_out):
    reg = DatasetRegistry(tmp_path / "node")
    e, _ = reg.register_etl_output("d", etl_out)
    p = reg.table_file(e)
    df = pd.read_parquet(p)
    df.loc[3, "age"] = 99.0
    df.to_parquet(p, index=False)
    with pytest.raises(FingerprintMismatch):
        reg.load_table("d", 1)


def test_invalid_table_changes_nothing(tmp_path, etl_out):
    reg = DatasetRegistry(tmp_path / "node")
    reg.register_etl_output("d", etl_out)
    before = (tmp_path / "node" / "registry.json").read_bytes()
    bad = reg.load_table("d", 1)
    bad.loc[0, "hb"] = 99.0  # outside the schema range
    with pytest.raises(RegistryError, match="hb"):
        reg.register("d", bad, "mds")
    bad2 = reg.load_table("d", 1).assign(extra_col=1)
    with pytest.raises(RegistryError, match="unknown column"):
        reg.register("d", bad2, "mds")
    with pytest.raises(RegistryError, match="registered for MDS"):
        reg.register("d", reg.load_table("d", 1)[["patient_id", "age"]], "aml")
    with pytest.raises(RegistryError, match="invalid dataset name"):
        reg.register("../evil", reg.load_table("d", 1), "mds")
    assert (tmp_path / "node" / "registry.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "node" / "datasets" / "d").iterdir()) == ["v1"]
    with pytest.raises(KeyError):
        reg.get("d", 2)


def _register_many(data_dir, name, n):
    reg = DatasetRegistry(data_dir)
    df = canonical_cohort(n=10, seed=0)
    base = pd.DataFrame({"patient_id": df.patient_id, "age": df.age})
    for i in range(n):
        reg.register(name, base.assign(age=base.age + i * 0.01), "mds")


def test_concurrent_registrations_keep_every_version(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(tmp_path / "node", f"ds{k}", 4)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads((tmp_path / "node" / "registry.json").read_text())
    got = sorted((d["name"], d["version"]) for d in data["datasets"])
    assert got == [(f"ds{k}", v) for k in range(2) for v in range(1, 5)]


def test_failed_import_changes_nothing_registered(tmp_path, etl_out):
    from etl.errors import EtlError
    reg = DatasetRegistry(tmp_path / "node")
    e1, _ = reg.register_etl_output("d", etl_out)
    before = {p.name: p.read_bytes() for p in etl_out.iterdir()}
    canonical_cohort(n=5).drop(columns=["sex"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(EtlError, match="missing required column sex"):
        run_etl("mds", [tmp_path / "bad.csv"], etl_out)
    assert {p.name: p.read_bytes() for p in etl_out.iterdir()} == before
    assert reg.list() == [e1] and len(reg.load_table("d", 1)) == 25


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fingerprint_ignores_row_order_and_sees_any_change(seed):
    df = canonical_cohort(n=15, seed=seed % 7)
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    assert fingerprint(shuffled) == fingerprint(df)
    i = seed % len(df)
    changed = df.copy()
    changed.loc[i, "os_months"] = np.nextafter(changed.loc[i, "os_months"], np.inf)
    assert fingerprint(changed) != fingerprint(df)


def test_verified_table_is_not_fingerprinted_again_until_its_bytes_change(tmp_path, etl_out, monkeypatch):
    """A load verifies the fingerprint once per exact file content: the second load of the same
    bytes skips the canonical CSV, and any change to the file (even keeping the fingerprint
    record) is verified in full again and refused."""
    import etl.registry as registry_mod
    reg = DatasetRegistry(tmp_path / "node")
    e, _ = reg.register_etl_output("d", etl_out)
    calls = []
    real = registry_mod.fingerprint
    monkeypatch.setattr(registry_mod, "fingerprint", lambda df, *a: calls.append(1) or real(df, *a))
    first = reg.load_table("d", 1)
    assert len(calls) == 1
    assert (tmp_path / "node" / ".verified" / "d-v1.json").is_file()
    pd.testing.assert_frame_equal(reg.load_table("d", 1), first)
    assert len(calls) == 1  # same bytes: not fingerprinted again
    p = reg.table_file(e)
    df = pd.read_parquet(p)
    df.loc[3, "age"] = 99.0
    df.to_parquet(p, index=False)
    with pytest.raises(FingerprintMismatch):
        reg.load_table("d", 1)
    assert len(calls) == 2
    # a forged record naming the new bytes does not help: it must also carry the registered
    # fingerprint, and then it says nothing registry.json does not
    rec = tmp_path / "node" / ".verified" / "d-v1.json"
    import hashlib
    import json as _json
    _json.dump({"table_path": e.table_path, "fingerprint": "0" * 64,
                "file_sha256": hashlib.sha256(p.read_bytes()).hexdigest()}, rec.open("w"))
    with pytest.raises(FingerprintMismatch):
        reg.load_table("d", 1)
    # the verification record is not a patient-level file of the registry
    assert all(".verified" not in q.parts for q in reg.at_rest_files())
