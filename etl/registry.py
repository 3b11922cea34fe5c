"""The node's local dataset registry: ``<data_dir>/registry.json`` (written atomically under a
file lock) plus one immutable copy of each registered table version under
``<data_dir>/datasets/<name>/v<version>/``.

A dataset is registered whole and valid or not at all: the table is checked against its
schema before anything is written, files are copied into a fresh version folder, and the
registry entry is added last. Re-registering identical content (same fingerprint) returns the
existing version; changed content makes version + 1. Studies pin ``(name, version)``.

Encryption at rest (docs/encryption-at-rest.md): a registry given a keyring (``keys``, a
``fedhaem_kernel.atrest.KeyProvider``; the node passes its own, fl_engine.node.datasets) writes
every file of a version folder encrypted except ``manifest.json`` (metadata), records
``extra["at_rest"] = "encrypted"`` on the entry, and refuses a plaintext table where an
encrypted one was registered. ``registry.json`` holds metadata only (names, counts,
fingerprints, column names of the public schema, quality counts) and stays plaintext, so the
heartbeat and ``list()`` need no key. Fingerprints are of the table's canonical CSV bytes,
never of the file, so encryption leaves them unchanged. A registry without a keyring reads and
writes plaintext (a table registered before encryption stays readable; `fedhaem-node
encrypt-at-rest --migrate` encrypts it in place).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from fedhaem_kernel import atrest
from fedhaem_kernel.atrest import KeyProvider
from fedhaem_kernel.schema import get_schema

from .table import fingerprint, read_table_file, write_table

log = logging.getLogger(__name__)
ENCRYPTED = "encrypted"
# files of a version folder left in plaintext: metadata only (what was announced to the manager)
PLAINTEXT_FILES = frozenset({"manifest.json"})
# the files of an ETL output folder (etl.pipeline) that hold patient-level content
ETL_PATIENT_FILES = ("bundles.ndjson", "table.parquet", "table.csv", "quality.json", "quality.html",
                     "quarantine.csv", "extra.csv")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class RegistryError(Exception):
    """A registration refused (bad table, bad name) or a registry problem."""


class FingerprintMismatch(RegistryError):
    """The stored table no longer matches the fingerprint it was registered with."""


@dataclass
class DatasetEntry:
    """One registered dataset version (metadata only; the rows stay in ``table_path``)."""
    name: str
    version: int
    use_case: str
    schema_version: str
    table_path: str          # relative to the registry's data_dir
    patient_count: int
    fingerprint: str         # sha256 of the canonical table bytes (etl.table.canonical_bytes)
    quality_summary: dict
    feature_schema: list[str]
    created_at: str
    source: str = ""
    announced_at: str | None = None
    extra: dict = field(default_factory=dict)

    def announcement(self) -> dict:
        """The metadata payload sent to the manager (never rows)."""
        return {"name": self.name, "version": self.version, "use_case": self.use_case,
                "schema_version": self.schema_version, "patient_count": self.patient_count,
                "fingerprint": self.fingerprint, "quality_summary": dict(self.quality_summary),
                "feature_schema": list(self.feature_schema)}


def check_table(df: pd.DataFrame, use_case: str) -> list[str]:
    """Problems that make a table unregistrable for a use case ([] when fine)."""
    schema = get_schema(use_case)
    probs = []
    if schema.id_column not in df.columns:
        return [f"missing column {schema.id_column}"]
    if df[schema.id_column].isna().any() or df[schema.id_column].duplicated().any():
        probs.append(f"{schema.id_column} has missing or duplicate values")
    known = {schema.id_column, *schema.feature_names}
    for e in schema.endpoints:
        known |= {e.time_column, e.event_column}
    for c in df.columns:
        if c not in known and not any(g.matches(c) for g in schema.embeddings):
            probs.append(f"unknown column {c!r} for {schema.use_case}")
    for f in schema.features:
        if f.name not in df.columns:
            if f.required:
                probs.append(f"missing required column {f.name}")
            continue
        s = df[f.name]
        if f.required and s.isna().any():
            probs.append(f"required column {f.name} has missing values")
        if f.kind in ("numeric", "binary"):
            x = pd.to_numeric(s, errors="coerce")
            if (x.isna() & s.notna()).any():
                probs.append(f"column {f.name} has non-numeric values")
            lo = f.minimum if f.minimum is not None else -float("inf")
            hi = f.maximum if f.maximum is not None else float("inf")
            bad = ((x < lo) | (x > hi)).sum()
            if bad:
                probs.append(f"column {f.name}: {bad} value(s) outside [{lo}, {hi}]")
        elif f.categories:
            bad = set(s.dropna()) - set(f.categories)
            if bad:
                probs.append(f"column {f.name}: unknown categories {sorted(bad)[:5]}")
    for e in schema.endpoints:
        if e.time_column in df.columns and (pd.to_numeric(df[e.time_column]) < 0).any():
            probs.append(f"column {e.time_column} has negative times")
        if e.event_column in df.columns:
            ev = df[e.event_column].dropna()
            if not ev.isin([0, 1]).all():
                probs.append(f"column {e.event_column} has values other than 0/1")
    return probs


class DatasetRegistry:
    """Datasets registered on this node; the worker trains only on what is listed here."""

    def __init__(self, data_dir: str | Path, keys: KeyProvider | None = None, encrypt: bool | None = None):
        """`keys`: the keyring tables are read (and, with `encrypt`, default True when `keys` is
        given, written) with; None: plaintext only."""
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "registry.json"
        self.lock_path = self.data_dir / "registry.lock"
        self.keys = keys
        self.encrypt = keys is not None if encrypt is None else bool(encrypt)
        if self.encrypt and keys is None:
            raise RegistryError(f"{self.data_dir}: encryption at rest needs a keyring")

    def _write_keys(self) -> KeyProvider | None:
        return self.keys if self.encrypt else None

    # --- storage -------------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _load(self) -> list[dict]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RegistryError(f"{self.path}: corrupt registry ({e.msg} at line {e.lineno})") from None
        return data.get("datasets", [])

    def _save(self, items: list[dict]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".registry-", dir=self.data_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"format": 1, "datasets": items}, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @staticmethod
    def _entry(d: dict) -> DatasetEntry:
        return DatasetEntry(**d)

    # --- API -----------------------------------------------------------------------------
    def list(self) -> list[DatasetEntry]:
        """All registered versions, ordered by name then version."""
        return sorted((self._entry(d) for d in self._load()), key=lambda e: (e.name, e.version))

    def get(self, name: str, version: int | None = None) -> DatasetEntry:
        """One version (the latest when version is None); KeyError when absent."""
        hits = [e for e in self.list() if e.name == name]
        if version is not None:
            hits = [e for e in hits if e.version == int(version)]
        if not hits:
            v = f" version {version}" if version is not None else ""
            raise KeyError(f"no dataset {name!r}{v} in {self.path}")
        return hits[-1]

    def table_file(self, entry: DatasetEntry) -> Path:
        return self.data_dir / entry.table_path

    def load_table(self, name: str, version: int | None = None) -> pd.DataFrame:
        """The registered table, after checking its fingerprint (FingerprintMismatch if changed)."""
        e = self.get(name, version)
        p = self.table_file(e)
        if not p.exists():
            raise RegistryError(f"table of {name} v{e.version} is missing: {p}")
        if e.extra.get("at_rest") == ENCRYPTED and not atrest.is_encrypted(p):
            raise atrest.TamperedFile(p, f"{name} v{e.version} was registered encrypted at rest, and this file "
                                         "is plaintext: it was replaced after registration")
        if self.keys is not None and not atrest.is_encrypted(p):
            log.warning("%s: %s v%d is stored in plaintext (registered before encryption at rest); encrypt "
                        "it with `fedhaem-node encrypt-at-rest --migrate`", p, name, e.version)
        digest = _file_sha256(p)
        df = read_table_file(p, self.keys)
        if self._verified(e, digest):
            return df
        fp = fingerprint(df)
        if fp != e.fingerprint:
            raise FingerprintMismatch(f"{name} v{e.version}: table {p} has fingerprint {fp[:12]}..., "
                                      f"registered {e.fingerprint[:12]}...; it was changed after registration")
        self._remember_verified(e, digest)
        return df

    # A table's fingerprint is of its canonical CSV (every float printed to 17 digits), which
    # costs a training process more CPU than reading the table. Once a file's exact bytes were
    # verified against the registered fingerprint, their sha256 is remembered beside the
    # registry (.verified/<name>-v<version>.json); the next load hashes the raw file (cheap)
    # and verifies the fingerprint again only when those bytes changed. The record grants
    # nothing the registry.json beside it does not: whoever can rewrite it can rewrite that.
    def _verified_path(self, e: DatasetEntry) -> Path:
        return self.data_dir / ".verified" / f"{e.name}-v{e.version}.json"

    def _verified(self, e: DatasetEntry, digest: str) -> bool:
        try:
            rec = json.loads(self._verified_path(e).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (isinstance(rec, dict) and rec.get("file_sha256") == digest
                and rec.get("fingerprint") == e.fingerprint and rec.get("table_path") == e.table_path)

    def _remember_verified(self, e: DatasetEntry, digest: str) -> None:
        path = self._verified_path(e)
        rec = {"table_path": e.table_path, "fingerprint": e.fingerprint, "file_sha256": digest}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(rec, f)
            os.replace(tmp, path)
        except OSError as err:  # a read-only data dir: the next load verifies in full again
            log.debug("could not remember the verified table %s: %s", path, err)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def register(self, name: str, table: str | Path | pd.DataFrame, use_case: str,
                 quality_summary: dict | None = None, schema_version: str | None = None,
                 attachments: list[str | Path] = (), source: str = "") -> tuple[DatasetEntry, bool]:
        """Register a table (path or DataFrame). Returns (entry, created): created is False when
        the latest version already has the same fingerprint. Raises RegistryError, leaving the
        registry unchanged, when the table is not valid for its use case."""
        if not NAME_RE.match(name or ""):
            raise RegistryError(f"invalid dataset name {name!r} (letters, digits, . _ -; max 64)")
        schema = get_schema(use_case)
        if schema_version is not None and schema_version != schema.version:
            raise RegistryError(f"schema version {schema_version} differs from this node's "
                                f"{schema.use_case} schema {schema.version}")
        df = read_table_file(table, self.keys) if not isinstance(table, pd.DataFrame) else table
        probs = check_table(df, use_case)
        if probs:
            raise RegistryError(f"{name}: table not valid for {schema.use_case}: " + "; ".join(probs[:5]))
        fp = fingerprint(df, schema.id_column)
        with self._locked():
            items = self._load()
            mine = [d for d in items if d["name"] == name]
            if mine:
                latest = max(mine, key=lambda d: d["version"])
                if latest["use_case"] != schema.use_case:
                    raise RegistryError(f"{name} is registered for {latest['use_case']}, not {schema.use_case}")
                if latest["fingerprint"] == fp:
                    return self._entry(latest), False
            version = max((d["version"] for d in mine), default=0) + 1
            rel = Path("datasets") / name / f"v{version}"
            dest = self.data_dir / rel
            if dest.exists():  # left over by an interrupted registration: never listed, so replace
                shutil.rmtree(dest)
            tmp = Path(tempfile.mkdtemp(prefix=".reg-", dir=self.data_dir))
            try:
                keys = self._write_keys()
                write_table(df, tmp, keys=keys)
                for a in attachments:
                    if Path(a).exists():
                        name_a = Path(a).name
                        atrest.copy_encrypted(a, tmp / name_a, None if name_a in PLAINTEXT_FILES else keys)
                if fingerprint(read_table_file(tmp / "table.parquet", self.keys), schema.id_column) != fp:
                    raise RegistryError(f"{name}: table changed while being stored")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            entry = DatasetEntry(
                name=name, version=version, use_case=schema.use_case, schema_version=schema.version,
                table_path=str(rel / "table.parquet"), patient_count=int(len(df)), fingerprint=fp,
                quality_summary=dict(quality_summary or {}), feature_schema=list(df.columns),
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), source=str(source),
                extra={"at_rest": ENCRYPTED} if keys is not None else {})
            items.append(asdict(entry))
            self._save(items)
            return entry, True

    def register_etl_output(self, name: str, out_dir: str | Path) -> tuple[DatasetEntry, bool]:
        """Register the output folder of ``etl.pipeline.run_etl`` (manifest + table + report)."""
        out = Path(out_dir)
        mf = out / "manifest.json"
        if not mf.exists():
            raise RegistryError(f"{out}: no manifest.json; run the ETL first (fedhaem-node etl)")
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        df = read_table_file(out / "table.parquet", self.keys)
        if fingerprint(df) != manifest["fingerprint"]:
            raise FingerprintMismatch(f"{out}/table.parquet differs from its manifest; re-run the ETL")
        return self.register(name, df, manifest["use_case"], manifest.get("quality_summary"),
                             manifest.get("schema_version"),
                             attachments=[out / "quality.json", out / "quality.html", mf], source=str(out))

    def at_rest_files(self) -> list[Path]:
        """The files of the registered versions that are (or, registered before encryption, should
        be) encrypted at rest: everything under datasets/ except the manifests."""
        root = self.data_dir / "datasets"
        return [p for p in atrest.iter_files([root]) if p.name not in PLAINTEXT_FILES
                and not any(part.startswith(".reg-") for part in p.relative_to(self.data_dir).parts)]

    def mark_announced(self, name: str, version: int) -> DatasetEntry:
        """Record that the manager accepted the announcement of (name, version)."""
        with self._locked():
            items = self._load()
            for d in items:
                if d["name"] == name and d["version"] == int(version):
                    d["announced_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                    self._save(items)
                    return self._entry(d)
        raise KeyError(f"no dataset {name!r} version {version}")
