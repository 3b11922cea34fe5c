"""The node's view of its local dataset registry (the only place a ClientApp reads data from).

The registry proper is `etl.registry.DatasetRegistry` (versions 1, 2, ...; the table's fingerprint
is checked on every load); etl ships in the same distribution as the node (`fedhaem[node]`).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from etl.registry import DatasetRegistry

HEARTBEAT_FIELDS = ("name", "version", "use_case", "patient_count", "fingerprint")


def open_registry(data_dir: str | Path) -> DatasetRegistry:
    """The dataset registry of a node."""
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
    if isinstance(version, str) and version.strip().isdigit():
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
    if isinstance(version, str) and version.strip().isdigit():
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
    if version is not None:
        raise ValueError("etl.registry numbers versions itself; pass version=None")
    entry, _created = reg.register(name, df, use_case)
    return _as_dict(entry)


def _as_dict(meta) -> dict:
    if hasattr(meta, "model_dump"):
        return meta.model_dump()
    if hasattr(meta, "__dataclass_fields__"):
        return asdict(meta)
    return dict(vars(meta))
