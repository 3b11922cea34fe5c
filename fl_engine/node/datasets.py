"""The node's view of its local dataset registry (the only place a ClientApp reads data from).

The registry proper is `etl.registry.DatasetRegistry` (versions 1, 2, ...; the table's fingerprint
is checked on every load); etl ships in the same distribution as the node (`fedhaem[node]`).

Encryption at rest (docs/encryption-at-rest.md): tables are registered and read with the node's
keyring (`node_keyring`): FEDHAEM_NODE_AT_REST_KEYS (a JSON keyring in the environment,
read-only), else the key file FEDHAEM_NODE_AT_REST_KEYS_FILE, else `<data dir>/../secrets/
at_rest_keys.json`, made (mode 0600) at first use. The key file sits beside the data dir, not in
it, so a copy or backup of the data dir holds no key. FEDHAEM_NODE_AT_REST_ENCRYPTION=false
writes new data in plaintext (encrypted data are still read). Metadata reads (`list_datasets`,
`dataset_meta`) need no key.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from etl.registry import ETL_PATIENT_FILES, DatasetRegistry
from fedhaem_kernel import atrest
from fedhaem_kernel.atrest import KeyringError, LocalKeyring

KEYS_ENV = "FEDHAEM_NODE_AT_REST_KEYS"
KEYS_FILE_ENV = "FEDHAEM_NODE_AT_REST_KEYS_FILE"
ENCRYPTION_ENV = "FEDHAEM_NODE_AT_REST_ENCRYPTION"
KEY_FILE_NAME = "at_rest_keys.json"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

HEARTBEAT_FIELDS = ("name", "version", "use_case", "patient_count", "fingerprint")


def encryption_on() -> bool:
    """FEDHAEM_NODE_AT_REST_ENCRYPTION (default on); KeyringError naming it when malformed."""
    raw = os.environ.get(ENCRYPTION_ENV, "").strip().lower()
    if not raw or raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise KeyringError(f"{ENCRYPTION_ENV}={raw!r} is not a boolean (true/false, 1/0, yes/no, on/off)")


def keyring_path(data_dir: str | Path) -> Path:
    """Where the node's key file is: FEDHAEM_NODE_AT_REST_KEYS_FILE, else beside the data dir
    (`<data dir>/../secrets/at_rest_keys.json`; a profile's data dir gives its profile folder)."""
    named = os.environ.get(KEYS_FILE_ENV, "").strip()
    if named:
        return Path(named)
    return Path(data_dir).resolve().parent / "secrets" / KEY_FILE_NAME


def node_keyring(data_dir: str | Path, create: bool = True) -> LocalKeyring | None:
    """The node's KEKs (see the module docstring). The default key file is made at first use
    (`create`); a key file named by FEDHAEM_NODE_AT_REST_KEYS_FILE must exist. None when there is
    no keyring and `create` is False. KeyringError names the source that is missing or malformed."""
    inline = os.environ.get(KEYS_ENV, "").strip()
    if inline:
        return LocalKeyring.from_json(inline, KEYS_ENV)
    path = keyring_path(data_dir)
    if os.environ.get(KEYS_FILE_ENV, "").strip():
        if not path.is_file():
            raise KeyringError(f"key file {path} (named by {KEYS_FILE_ENV}) does not exist")
        return LocalKeyring.from_file(path)
    if path.is_file():
        return LocalKeyring.from_file(path)
    return LocalKeyring.load_or_create(path) if create else None


def open_registry(data_dir: str | Path) -> DatasetRegistry:
    """The dataset registry of a node, with the node's keyring (tables encrypted at rest)."""
    on = encryption_on()
    return DatasetRegistry(data_dir, keys=node_keyring(data_dir, create=on), encrypt=on)


def metadata_registry(data_dir: str | Path) -> DatasetRegistry:
    """The registry for metadata only (registry.json is plaintext): no keyring needed."""
    return DatasetRegistry(data_dir)


def list_datasets(data_dir: str | Path) -> list[dict]:
    """Metadata of every registered dataset version (heartbeat fields only, no rows)."""
    out = []
    for meta in metadata_registry(data_dir).list():
        m = meta if isinstance(meta, dict) else _as_dict(meta)
        out.append({k: m.get(k) for k in HEARTBEAT_FIELDS})
    return out


def dataset_meta(data_dir: str | Path, name: str, version: str | None = None) -> dict:
    """Metadata (name, version, fingerprint, ...) of a registered dataset, without reading rows."""
    reg = metadata_registry(data_dir)
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


# --- encryption at rest: the migrate path and key rotation (fedhaem-node commands) ------------

def at_rest_files(data_dir: str | Path, etl_outputs: Iterable[str | Path] = ()) -> list[Path]:
    """The node files that hold patient-level content: every registered version's files but the
    manifest, and the outputs of the ETL folders given (all but manifest.json)."""
    return DatasetRegistry(data_dir).at_rest_files() + etl_output_files(etl_outputs)


def etl_output_files(etl_outputs: Iterable[str | Path]) -> list[Path]:
    """The files of ETL output folders that hold patient-level content (all but manifest.json)."""
    return [Path(out) / n for out in etl_outputs for n in ETL_PATIENT_FILES if (Path(out) / n).is_file()]


def migrate_plaintext(data_dir: str | Path, etl_outputs: Iterable[str | Path] = (), apply: bool = False,
                      progress: Callable[[Path, str], None] | None = None) -> dict:
    """The migrate path: encrypt in place (atomically, per file) the plaintext files a node wrote
    before encryption at rest (`apply`), or only count them. Returns counts and the KEK census."""
    files = at_rest_files(data_dir, etl_outputs)
    out: dict = {"data_dir": str(data_dir), "files": len(files)}
    if apply:
        keys = node_keyring(data_dir)
        out.update(atrest.migrate(files, keys, progress).as_dict(), current_key=keys.current_key_id)
    out["census"] = atrest.census(files)
    return out


def rotate_keys(data_dirs: Iterable[str | Path], etl_outputs: Iterable[str | Path] = (), *,
                new_key: bool = False, retire: str | None = None,
                progress: Callable[[Path, str], None] | None = None) -> dict:
    """Re-wrap every encrypted node file under the current KEK (`new_key`: first add a fresh KEK
    to the key file and make it current), then (`retire`) drop an old KEK once no file is under
    it. Data dirs sharing a keyring are rotated together (one new key). Safe to interrupt and
    run again. Returns, per keyring, the counts and the KEK census."""
    groups: dict[str, list[Path]] = {}
    for d in data_dirs:
        src = KEYS_ENV if os.environ.get(KEYS_ENV, "").strip() else str(keyring_path(d))
        groups.setdefault(src, []).append(Path(d))
    extra = list(etl_outputs)
    results = []
    for src, dirs in groups.items():
        ring = node_keyring(dirs[0], create=False)
        if ring is None:
            raise KeyringError(f"key file {src} does not exist: no file of {', '.join(map(str, dirs))} is "
                               "encrypted yet (it is made at first use)")
        out: dict = {"keyring": src, "data_dirs": [str(d) for d in dirs], "previous_key": ring.current_key_id}
        if new_key:
            out["new_key"] = ring.add_key()
        files = [f for d in dirs for f in at_rest_files(d)] + etl_output_files(extra)
        extra = []  # ETL outputs go with the first keyring (the one `fedhaem-node etl` used)
        rep = atrest.rotate(files, ring, progress)
        out.update(rep.as_dict(), current_key=ring.current_key_id)
        if retire and retire in ring.keys:
            if rep.errors:
                raise KeyringError(f"not retiring {retire!r}: {len(rep.errors)} file(s) could not be re-wrapped "
                                   "(see errors)")
            if rep.key_ids.get(retire):
                raise KeyringError(f"not retiring {retire!r}: {rep.key_ids[retire]} file(s) are still under it")
            ring.retire(retire)
            out["retired"] = retire
        results.append(out)
    if retire and not any(r.get("retired") for r in results):
        raise KeyringError(f"no keyring of {', '.join(groups)} holds a key {retire!r}")
    return {"keyrings": results}
