"""The node's view of its local dataset registry (the only place a ClientApp reads data from).

The registry proper is `etl.registry.DatasetRegistry` (versions 1, 2, ...; the table's fingerprint
is checked on every load). Only when the etl package is not installed does this module fall back
to a minimal registry with the same calls (``<data_dir>/<name>/<version>/table.parquet`` plus
``meta.json``). Switch point: `open_registry`.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

HEARTBEAT_FIELDS = ("name", "version", "use_case", "patient_count", "fingerprint")


def open_registry(data_dir: str | Path):
    """The dataset registry of a node: etl.registry.DatasetRegistry when available."""
    try:
        from etl.registry import DatasetRegistry
    except ImportError:
        return _FallbackRegistry(data_dir)
    return DatasetRegistry(data_dir)


def list_datasets(data_dir: str | Path) -> list[dict]:
    """Metadata of every registered dataset version (heartbeat fields only, no rows)."""
    out = []
    for meta in open_registry(data_dir).list():
        m = meta if isinstance(meta, dict) else _as_dict(meta)
        out.append({k: m.get(k) for k in HEARTBEAT_FIELDS})
    return out


def dataset_meta(data_dir: str | Path, name: str, version: str | None = None) -> dict:
    """Metadata (name, version, fingerprint, ...) of a registered dataset, without reading rows."""
    reg = open_registry(data_dir)
    if isinstance(version, str) and version.strip().isdigit() and not isinstance(reg, _FallbackRegistry):
        version = int(version)
    try:
        meta = reg.get(name, version or None)
    except KeyError as err:
        raise LookupError(f"dataset {name!r} version {version or 'latest'!r} is not registered "
                          f"on this node (data dir {data_dir})") from err
    return meta if isinstance(meta, dict) else _as_dict(meta)


def load_dataset(data_dir: str | Path, name: str, version: str | None = None) -> tuple[pd.DataFrame, dict]:
    """(table, metadata) of a registered dataset; version None or "" = the latest."""
    reg = open_registry(data_dir)
    if isinstance(version, str) and version.strip().isdigit() and not isinstance(reg, _FallbackRegistry):
        version = int(version)  # etl.registry numbers versions 1, 2, ...
    try:
        meta = reg.get(name, version or None)
    except KeyError as err:
        raise LookupError(f"dataset {name!r} version {version or 'latest'!r} is not registered "
                          f"on this node (data dir {data_dir})") from err
    m = meta if isinstance(meta, dict) else _as_dict(meta)
    return reg.load_table(name, m["version"]), m


def register_table(data_dir: str | Path, name: str, df: pd.DataFrame, use_case: str,
                   version: str | None = None) -> dict:
    """Register an ML-ready table (tests and demos; real data come through `etl register`);
    returns its metadata. The etl registry validates the table against the schema first."""
    reg = open_registry(data_dir)
    if isinstance(reg, _FallbackRegistry):
        return reg.register(name, df, use_case, version)
    if version is not None:
        raise ValueError("etl.registry numbers versions itself; pass version=None")
    entry, _created = reg.register(name, df, use_case)
    return _as_dict(entry)


def _as_dict(meta) -> dict:
    if hasattr(meta, "model_dump"):
        return meta.model_dump()
    if hasattr(meta, "__dataclass_fields__"):
        from dataclasses import asdict
        return asdict(meta)
    return dict(vars(meta))


class _FallbackRegistry:
    """Minimal stand-in with the calls of etl.registry.DatasetRegistry."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)

    def list(self) -> list[dict]:
        if not self.root.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/*/meta.json"))]

    def get(self, name: str, version: str | None = None) -> dict:
        metas = [m for m in self.list() if m["name"] == name]
        if version:
            metas = [m for m in metas if m["version"] == version]
        if not metas:
            raise KeyError(name)
        return max(metas, key=lambda m: m["registered_at"])

    def load_table(self, name: str, version: str) -> pd.DataFrame:
        meta = self.get(name, version)
        path = self.root / name / version / "table.parquet"
        digest = _sha256(path)
        if digest != meta["fingerprint"]:
            raise ValueError(f"{path}: fingerprint {digest[:12]} does not match the registered "
                             f"{meta['fingerprint'][:12]}; the file changed after registration")
        return pd.read_parquet(path)

    def register(self, name: str, df: pd.DataFrame, use_case: str, version: str | None) -> dict:
        version = version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        folder = self.root / name / version
        folder.mkdir(parents=True, exist_ok=False)
        df.to_parquet(folder / "table.parquet", index=False)
        meta = {"name": name, "version": version, "use_case": use_case,
                "patient_count": int(len(df)), "fingerprint": _sha256(folder / "table.parquet"),
                "registered_at": datetime.now(timezone.utc).isoformat()}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
