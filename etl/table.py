"""Writing, reading and fingerprinting the ML-ready table."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from fedhaem_kernel import atrest
from fedhaem_kernel.atrest import KeyProvider
from fedhaem_kernel.schema import NOT_TESTED_ATTR


def not_tested(df: pd.DataFrame) -> list[str]:
    """The fields the table declares never tested (``NOT_TESTED_ATTR``), sorted; [] when none."""
    return sorted(str(x) for x in (df.attrs.get(NOT_TESTED_ATTR) or ()))


def canonical_bytes(df: pd.DataFrame, id_column: str = "patient_id") -> bytes:
    """The table as canonical CSV bytes: rows sorted by id, columns as given, floats with 17
    significant digits (exact for float64), NaN as empty, '\\n' line ends, UTF-8; then, when
    the table declares fields never tested, one line naming them (the declaration changes how
    scores read the table, so it is part of what a fingerprint identifies)."""
    d = df.sort_values(id_column, kind="stable").reset_index(drop=True) if id_column in df else df
    buf = io.StringIO()
    d.to_csv(buf, index=False, float_format="%.17g", lineterminator="\n", na_rep="")
    declared = not_tested(df)
    if declared:
        buf.write("# not tested: " + ",".join(declared) + "\n")
    return buf.getvalue().encode("utf-8")


def fingerprint(df: pd.DataFrame, id_column: str = "patient_id") -> str:
    """sha256 hex digest of ``canonical_bytes``: equal tables give equal fingerprints."""
    return hashlib.sha256(canonical_bytes(df, id_column)).hexdigest()


def write_table(df: pd.DataFrame, out_dir: Path, stem: str = "table",
                keys: KeyProvider | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.parquet`` (pyarrow) and ``<stem>.csv``; returns both paths. The Parquet
    file keeps ``df.attrs`` (the fields declared not tested); the CSV cannot, and
    ``read_table_file`` takes them from the manifest.json beside it. With ``keys`` both files
    are encrypted at rest (fedhaem_kernel.atrest); the fingerprint is of the table, not of the
    file, so it is the same either way."""
    out_dir = Path(out_dir)
    pq = out_dir / f"{stem}.parquet"
    csv = out_dir / f"{stem}.csv"
    buf = io.BytesIO()
    df.to_parquet(buf, engine="pyarrow", index=False)
    atrest.write_file(pq, buf.getvalue(), keys)
    text = df.to_csv(index=False, float_format="%.17g", lineterminator="\n", na_rep="")
    atrest.write_file(csv, text.encode("utf-8"), keys)
    return pq, csv


def read_table_file(path: str | Path, keys: KeyProvider | None = None) -> pd.DataFrame:
    """Read a table written by ``write_table`` (Parquet preferred, CSV accepted), decrypting it
    with ``keys`` when it is encrypted at rest (atrest.MissingKeyring names the file without)."""
    p = Path(path)
    data = io.BytesIO(atrest.read_file(p, keys))
    if p.suffix == ".parquet":
        return pd.read_parquet(data, engine="pyarrow")
    df = pd.read_csv(data, dtype={"patient_id": str}, keep_default_na=True)
    manifest = p.parent / "manifest.json"
    if manifest.exists():  # an ETL output folder: its declarations travel in the manifest
        try:
            declared = json.loads(manifest.read_text(encoding="utf-8")).get("not_tested") or []
        except (OSError, ValueError, AttributeError):
            declared = []
        if declared:
            df.attrs[NOT_TESTED_ATTR] = sorted(map(str, declared))
    return df
