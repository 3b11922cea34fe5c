"""Encryption at rest (fedhaem_kernel.atrest, portal.core.at_rest): envelope encryption round
trips; a tampered, truncated or foreign-key file fails naming the file; key rotation re-wraps
headers only, survives an interruption and lets the old key go; legacy plaintext is read only
through the migrate path; and the portal's real conclusion code leaves no plaintext cohort value,
column header or model byte in the raw files under media, the run folders and MLflow's store."""
from __future__ import annotations

import io
import json
import os
import stat
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from fedhaem_kernel import atrest

# the fixtures and helpers of the portal's own conclusion tests (one real path, not a copy)
from tests.portal import test_generation_api as gen_tests
from tests.portal import test_run_lifecycle as life_tests

HS = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def ring(tmp_path) -> atrest.LocalKeyring:
    return atrest.LocalKeyring.create(tmp_path / "keys" / "at_rest_keys.json")


def _ring(tmp_path_factory) -> atrest.LocalKeyring:
    return atrest.LocalKeyring.create(tmp_path_factory.mktemp("k") / "keys.json")


# --- the kernel -----------------------------------------------------------------------------------

@HS
@given(data=st.binary(max_size=3000), chunk=st.integers(1, 97),
       splits=st.lists(st.integers(0, 400), max_size=12), seeks=st.lists(st.integers(0, 3100), max_size=6))
def test_round_trip_any_content_any_chunking(tmp_path_factory, data, chunk, splits, seeks):
    keys = _ring(tmp_path_factory)
    path = tmp_path_factory.mktemp("rt") / "f.bin"
    with atrest.open_encrypted(path, keys, "wb", chunk_size=chunk) as w:  # arbitrary write sizes
        rest = memoryview(data)
        for n in splits:
            w.write(rest[:n])
            rest = rest[n:]
        w.write(rest)
    assert atrest.read_bytes(path, keys) == data
    raw = path.read_bytes()
    assert raw.startswith(atrest.MAGIC) and (len(data) < 8 or data not in raw)
    with atrest.open_encrypted(path, keys) as r:  # random access reads the same bytes
        for pos in seeks:
            r.seek(pos)
            assert r.read(50) == data[pos:pos + 50]
        assert r.seek(0, io.SEEK_END) == len(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if atrest.TMP_MARK in p.name]


@HS
@given(data=st.binary(min_size=1, max_size=600), chunk=st.integers(1, 64), where=st.integers(0, 10_000),
       flip=st.integers(1, 255))
def test_any_altered_byte_is_refused_naming_the_file(tmp_path_factory, data, chunk, where, flip):
    keys = _ring(tmp_path_factory)
    path = tmp_path_factory.mktemp("tamper") / "cohort.csv"
    atrest.write_bytes(path, data, keys, chunk_size=chunk)
    raw = bytearray(path.read_bytes())
    raw[where % len(raw)] ^= flip
    path.write_bytes(bytes(raw))
    with pytest.raises(atrest.AtRestError) as err:
        atrest.read_bytes(path, keys)
    assert str(path) in str(err.value)


def test_every_truncation_is_refused_naming_the_file(ring, tmp_path):
    path = tmp_path / "model.npz"
    data = os.urandom(1000)
    atrest.write_bytes(path, data, ring, chunk_size=100)
    full = path.read_bytes()
    kinds = set()
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        with pytest.raises(atrest.AtRestError) as err:
            atrest.read_bytes(path, ring)
        assert str(path) in str(err.value), cut
        kinds.add(type(err.value).__name__)
    # cut at a chunk boundary: said to be a truncation, not a generic tamper
    header = len(full) - (1000 + 10 * atrest.TAG)
    path.write_bytes(full[:header + 3 * (100 + atrest.TAG)])
    with pytest.raises(atrest.TruncatedFile, match="truncated"):
        atrest.read_bytes(path, ring)
    assert {"TruncatedFile", "TamperedFile", "NotEncrypted"} <= kinds
    # appended bytes are refused too
    path.write_bytes(full + b"x")
    with pytest.raises(atrest.AtRestError, match=str(path)):
        atrest.read_bytes(path, ring)


def test_unknown_key_and_plaintext_are_refused_naming_the_file(ring, tmp_path):
    path = tmp_path / "run-1.csv"
    atrest.write_bytes(path, b"age,hb\n71,9.8\n", ring)
    other = atrest.LocalKeyring.create(tmp_path / "other.json")
    with pytest.raises(atrest.UnknownKey) as err:
        atrest.read_bytes(path, other)
    assert str(path) in str(err.value) and ring.current_key_id in str(err.value)
    # a KEK with the right id but other key bytes: the wrapped data key does not authenticate
    impostor = atrest.LocalKeyring({ring.current_key_id: os.urandom(32)}, ring.current_key_id)
    with pytest.raises(atrest.TamperedFile, match=str(path)):
        atrest.read_bytes(path, impostor)
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes(b"age,hb\n71,9.8\n")
    with pytest.raises(atrest.NotEncrypted, match="encrypt_at_rest --migrate") as err:
        atrest.read_bytes(legacy, ring)
    assert str(legacy) in str(err.value)


def test_migrate_encrypts_plaintext_in_place_once(ring, tmp_path):
    files = {tmp_path / "media" / "synthetic" / f"run-{i}.csv": f"age,hb\n{70 + i},9.{i}\n".encode()
             for i in range(3)}
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    rep = atrest.migrate([tmp_path / "media"], ring)
    assert (rep.changed, rep.unchanged, rep.errors) == (3, 0, [])
    for p, data in files.items():
        assert p.read_bytes()[:4] == atrest.MAGIC and data not in p.read_bytes()
        assert atrest.read_bytes(p, ring) == data
    assert atrest.migrate([tmp_path / "media"], ring).as_dict()["changed"] == 0  # re-run: nothing left


def test_rotation_rewraps_headers_only_and_the_old_key_can_go(ring, tmp_path):
    root = tmp_path / "runs"
    data = {root / str(i) / "model" / "model.npz": os.urandom(5000 + i) for i in range(4)}
    for p, d in data.items():
        atrest.write_bytes(p, d, ring, chunk_size=1024)
    old = ring.current_key_id
    bodies = {p: p.read_bytes()[-(len(d) + 5 * atrest.TAG):] for p, d in data.items()}
    new = ring.add_key()
    assert atrest.LocalKeyring.from_file(ring.path).current_key_id == new  # saved
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    rep = atrest.rotate([root], ring)
    assert (rep.changed, rep.unchanged, rep.errors, rep.key_ids) == (4, 0, [], {new: 4})
    for p, d in data.items():  # chunks copied untouched: only the header changed
        assert p.read_bytes().endswith(bodies[p])
    ring.retire(old)
    reread = atrest.LocalKeyring.from_file(ring.path)
    assert reread.key_ids() == [new]
    for p, d in data.items():
        assert atrest.read_bytes(p, reread) == d
    assert atrest.rotate([root], reread).as_dict()["changed"] == 0
    with pytest.raises(atrest.KeyringError, match="current"):
        reread.retire(new)


def test_interrupted_rotation_leaves_every_file_readable_and_a_rerun_finishes(ring, tmp_path, monkeypatch):
    root = tmp_path / "media"
    data = {root / f"c{i}.csv": os.urandom(3000) for i in range(6)}
    for p, d in data.items():
        atrest.write_bytes(p, d, ring, chunk_size=512)
    old = ring.current_key_id
    new = ring.add_key()
    real_replace = os.replace
    calls = {"n": 0}

    def crash_on_third(src, dst):  # the process dies while rewriting the third file
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(atrest.os, "replace", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        atrest.rotate([root], ring)
    monkeypatch.setattr(atrest.os, "replace", real_replace)
    assert not [p for p in root.iterdir() if atrest.TMP_MARK in p.name]  # no half-written file left
    assert atrest.census([root]) == {new: 2, old: 4}
    for p, d in data.items():
        assert atrest.read_bytes(p, ring) == d
    rep = atrest.rotate([root], ring)
    assert (rep.changed, rep.unchanged, rep.key_ids) == (4, 2, {new: 6})


def test_streaming_keeps_memory_bounded(ring, tmp_path):
    """32 MiB through the writer and the reader with chunked AEAD: peak Python memory stays a few
    chunks, not the file (a 200 MB model never sits twice in memory)."""
    size = 32 * 1024 * 1024

    class Source(io.RawIOBase):
        left = size

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = b"\x5a" * n
            self.left -= n
            return n

    path = tmp_path / "big.bin"
    tracemalloc.start()
    atrest.write_stream(path, Source(), ring)
    _, peak_write = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()

    class Sink:
        n = 0

        def write(self, b):
            self.n += len(b)

    sink = Sink()
    atrest.read_stream(path, sink, ring)
    _, peak_read = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sink.n == size
    assert peak_write < 8 * atrest.CHUNK_SIZE and peak_read < 8 * atrest.CHUNK_SIZE, (peak_write, peak_read)


def test_keyring_sources_fail_loudly_and_env_keys_cannot_be_changed_here(tmp_path):
    with pytest.raises(atrest.KeyringError, match="FEDHAEM_AT_REST_KEYS"):
        atrest.LocalKeyring.from_json("{not json", "FEDHAEM_AT_REST_KEYS")
    with pytest.raises(atrest.KeyringError, match="not among its keys"):
        atrest.LocalKeyring.from_json(json.dumps({"current": "b", "keys": {"a": "A" * 44}}), "env")
    with pytest.raises(atrest.KeyringError, match="not 32"):
        atrest.LocalKeyring.from_json(json.dumps({"current": "a", "keys": {"a": "QUJD"}}), "env")
    with pytest.raises(atrest.KeyringError, match=str(tmp_path / "missing.json")):
        atrest.LocalKeyring.from_file(tmp_path / "missing.json")
    ring = atrest.LocalKeyring.create(tmp_path / "k.json")
    env_ring = atrest.LocalKeyring.from_json(ring.to_json(), "FEDHAEM_AT_REST_KEYS")
    with pytest.raises(atrest.KeyringError, match="environment"):
        env_ring.add_key()
    with pytest.raises(atrest.KeyringError, match="already exists"):
        atrest.LocalKeyring.create(tmp_path / "k.json")


# --- the portal -----------------------------------------------------------------------------------

def test_settings_generate_a_private_key_file_and_turn_encryption_on():
    from django.conf import settings

    from portal.core import at_rest

    assert settings.AT_REST_ENCRYPTION is True  # on by default, the demo included
    assert settings.AT_REST_KEYS_FILE.is_file()
    assert stat.S_IMODE(settings.AT_REST_KEYS_FILE.stat().st_mode) == 0o600
    assert at_rest.keyring().current_key_id in at_rest.keyring().key_ids()
    assert settings.STORAGES["default"]["BACKEND"] == "portal.core.at_rest.EncryptedFileSystemStorage"


def test_a_malformed_environment_keyring_stops_start_up_naming_it(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "FEDHAEM_VAR_DIR": str(tmp_path / "var"), "FEDHAEM_AT_REST_KEYS": "{broken",
           "DJANGO_SETTINGS_MODULE": "portal.settings"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "FEDHAEM_AT_REST_KEYS" in out.stderr and "ImproperlyConfigured" in out.stderr


def _needles_of_csv(csv: bytes) -> set[bytes]:
    """The header line, each column name and every distinct cell of 5+ characters."""
    lines = csv.decode().splitlines()
    out = {lines[0].encode()} | {c.encode() for c in lines[0].split(",") if len(c) >= 4}
    for line in lines[1:]:
        out |= {cell.encode() for cell in line.split(",") if len(cell) >= 5}
    return out


def _windows(data: bytes, width: int = 24, step: int = 97) -> set[bytes]:
    return {data[i:i + width] for i in range(0, max(1, len(data) - width), step)}


def _raw_files(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


def _leaks(files: list[Path], needles: set[bytes]) -> list[str]:
    out = []
    for f in files:
        raw = f.read_bytes()
        out += [f"{f}: {n[:40]!r}" for n in needles if n in raw]
    return out


study_gen = gen_tests.study  # the generation tests' study fixture (MEDIA_ROOT under tmp_path)


@pytest.mark.django_db
def test_stored_synthetic_cohort_has_no_plaintext_at_rest_and_downloads_as_plaintext(
        study_gen, personas, client, tmp_path, settings):
    from django.conf import settings as live

    from portal.studies import lifecycle
    from portal.synthesis.models import SyntheticCohort

    run = gen_tests._finished_generation(study_gen, personas, tmp_path)
    csv = lifecycle.artefacts(run)["synthetic.csv"]
    assert lifecycle.conclude(run.pk) == "finished"  # the portal's real conclusion path
    cohort = SyntheticCohort.objects.get(run=run)
    files = _raw_files(Path(live.MEDIA_ROOT))
    assert files and all(f.read_bytes()[:4] == atrest.MAGIC for f in files)
    needles = _needles_of_csv(csv)
    assert len(needles) > 20 and any(b"os_months" in n for n in needles)
    assert not _leaks(files, needles)
    control = tmp_path / "control.csv"  # the scan does find them in a plaintext copy
    control.write_bytes(csv)
    assert len(_leaks([control], needles)) == len(needles)
    # an authorised download streams the plaintext CSV, Content-Length the plaintext size
    SyntheticCohort.objects.filter(pk=cohort.pk).update(released=True)
    client.force_login(personas["data_manager"])
    r = client.get(f"/cohorts/{cohort.pk}/download/")
    assert r.status_code == 200 and r.streaming
    assert b"".join(r.streaming_content) == csv and int(r["Content-Length"]) == len(csv)
    # a tampered stored file is refused with a reason, not served and not a 500
    path = Path(live.MEDIA_ROOT) / cohort.file.name
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1
    path.write_bytes(bytes(raw))
    r = client.get(f"/cohorts/{cohort.pk}/download/")
    assert r.status_code == 403 and b"cannot be decrypted" in r.content


study_life = life_tests.study


@pytest.mark.django_db
def test_concluded_run_leaves_no_model_bytes_in_run_folder_or_mlflow_store(
        study_life, personas, monkeypatch, capsys, settings, tmp_path):
    import mlflow

    from portal.studies import lifecycle, services
    from portal.studies.models import ModelVersion

    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    settings.MLFLOW_ARTIFACT_ROOT = str(tmp_path / "mlflow" / "artifacts")
    run = services.start_run(personas["coordinator"], study_life)
    log_text = life_tests._engine_log(run, capsys)
    life_tests._running(run)
    life_tests._flower(monkeypatch, {"77": "finished:completed"}, {"77": log_text})
    lifecycle.reconcile()
    files = lifecycle.artefacts(run)
    assert lifecycle.conclude(run.pk) == "finished"
    mv = ModelVersion.objects.get(run=run)
    run.refresh_from_db()
    assert mv.registered_model_name and not run.error, run.error

    run_files = _raw_files(services.run_dir(run))
    art_files = _raw_files(Path(settings.MLFLOW_ARTIFACT_ROOT))
    assert {p.name for p in run_files} == {"model.npz", "model.json"}
    assert {"model.npz", "model.json", "MLmodel", "requirements.txt"} <= {p.name for p in art_files}
    assert all(f.read_bytes()[:4] == atrest.MAGIC for f in run_files + art_files)
    model_json = json.loads(files["model.json"])
    needles = (_windows(files["model.npz"]) | _windows(files["model.json"])
               | {k.encode() for k in model_json if len(k) >= 5} | {b"python_function", b"cloudpickle"})
    assert len(needles) > 10
    assert not _leaks(run_files + art_files, needles)

    # everything still reads: the model page's archive, MLflow's own download, the curves selector
    name, archive = services.model_archive(personas["coordinator"], mv)
    import zipfile

    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.read("model.npz") == files["model.npz"] and zf.read("model.json") == files["model.json"]
    got = Path(mlflow.artifacts.download_artifacts(mv.artifact_uri))
    npz = [p for p in got.rglob("model.npz")]
    assert len(npz) == 1 and npz[0].read_bytes() == files["model.npz"], sorted(got.rglob("*"))
    assert "mlflow==" in (got / "requirements.txt").read_text()
    plain = _raw_files(got)  # the scan finds the needles in the decrypted copies
    assert {b"python_function", b"cloudpickle"} <= {n for n in needles if _leaks(plain, {n})}
    assert len(_leaks(plain, _windows(files["model.npz"]))) == len(_windows(files["model.npz"]))
    # serving: MLflow loads the registered model through the encrypted store and predicts
    from fl_engine.cohort import generate_mds_cohort

    model = mlflow.pyfunc.load_model(f"models:/{mv.registered_model_name}/{mv.version}")
    pred = model.predict(generate_mds_cohort(20, seed=5))
    assert len(pred) == 20 and pred["risk"].notna().all()


@pytest.mark.django_db
def test_commands_rotate_and_migrate_what_the_portal_keeps(settings, tmp_path):
    from django.core.management import call_command

    from portal.core import at_rest

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VAR_DIR = tmp_path / "var"  # its run folders: none
    settings.MLFLOW_ARTIFACT_ROOT = str(tmp_path / "mlflow")
    key_file = tmp_path / "keys.json"
    atrest.LocalKeyring.create(key_file)
    settings.AT_REST_KEYS_FILE = key_file
    legacy = Path(settings.MEDIA_ROOT) / "synthetic" / "run-9-ctgan.csv"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"age,hb,os_months\n71,9.8,12.5\n")
    enc = Path(settings.MEDIA_ROOT) / "synthetic" / "run-8-ctgan.csv"
    at_rest.write_file(enc, b"age,hb\n60,11.0\n")

    out = io.StringIO()
    call_command("encrypt_at_rest", "--json", stdout=out)  # counting only
    first_key = at_rest.keyring().current_key_id
    assert json.loads(out.getvalue())["census"] == {"plaintext": 1, first_key: 1}
    assert legacy.read_bytes().startswith(b"age")
    out = io.StringIO()
    call_command("encrypt_at_rest", "--migrate", stdout=out)
    assert "encrypted 1 plaintext file(s), 1 already encrypted, 0 error(s)" in out.getvalue()
    assert at_rest.read_file(legacy) == b"age,hb,os_months\n71,9.8,12.5\n"

    out = io.StringIO()
    call_command("rotate_at_rest_keys", "--new-key", "--json", stdout=out)
    res = json.loads(out.getvalue())
    assert res["changed"] == 2 and res["key_ids"] == {res["new_key"]: 2} and res["previous_key"] == first_key
    out = io.StringIO()
    call_command("rotate_at_rest_keys", "--retire", first_key, stdout=out)
    assert "re-wrapped 0 file(s), 2 already under" in out.getvalue() and f"retired key {first_key}" in out.getvalue()
    assert atrest.LocalKeyring.from_file(key_file).key_ids() == [res["new_key"]]
    assert at_rest.read_file(enc) == b"age,hb\n60,11.0\n"
    # a key still in use cannot be retired
    atrest.write_bytes(tmp_path / "media" / "x.bin", b"payload", at_rest.keyring())
    newer = at_rest.keyring().current_key_id
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=f"not retiring '{newer}': 3 file"):
        call_command("rotate_at_rest_keys", "--retire", newer, stdout=io.StringIO())


def test_a_rotation_by_another_process_is_seen_by_a_running_portal(settings, tmp_path):
    """The portal caches its keyring; a key file rewritten by `rotate_at_rest_keys` in another
    process (new current key, old one retired) is read again, so no file is written under a
    retired key and re-wrapped files stay readable."""
    from portal.core import at_rest

    key_file = tmp_path / "keys.json"
    atrest.LocalKeyring.create(key_file)
    settings.AT_REST_KEYS_FILE = key_file
    first = at_rest.keyring()
    path = tmp_path / "runs" / "1" / "model" / "model.json"
    at_rest.write_file(path, b'{"curves": {}}')
    other = atrest.LocalKeyring.from_file(key_file)  # "another process"
    old = other.current_key_id
    new = other.add_key()
    atrest.rotate([tmp_path / "runs"], other)
    other.retire(old)
    assert at_rest.keyring() is not first and at_rest.keyring().key_ids() == [new]
    assert at_rest.read_file(path) == b'{"curves": {}}'
    at_rest.write_file(path, b"{}")
    assert atrest.census([tmp_path / "runs"]) == {new: 1}


def test_processes_starting_together_agree_on_one_keyring(tmp_path):
    """The portal, its workers and the SuperLink's launcher may all start at once: every one of
    them ends up with the same, complete keyring."""
    import subprocess
    import sys

    path = tmp_path / "secrets" / "at_rest_keys.json"
    code = ("import sys; from fedhaem_kernel.atrest import LocalKeyring; "
            f"print(LocalKeyring.load_or_create({str(path)!r}).current_key_id)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    ids = {o.strip() for o, _ in outs}
    assert ids == {atrest.LocalKeyring.from_file(path).current_key_id}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
