"""The ETL run: source files -> FHIR bundles (validated) -> ML-ready table + quality report.

Outputs in ``out_dir`` (written only when the run succeeds; a failed run writes nothing):
``bundles.ndjson``, ``table.parquet``, ``table.csv``, ``quality.json``, ``quality.html``,
``quarantine.csv`` (every rejected patient row and every value set missing, with file, row,
column, reason and the source cell), ``manifest.json``, and ``extra.csv`` when the mapping
carries fields outside the schema.

Encryption at rest: given a keyring (``keys``, a ``fedhaem_kernel.atrest.KeyProvider``; the node
passes its own) every output holding patient-level content is encrypted: the bundles, both table
files, quality.json and quality.html (they list rejected rows and quarantined values by patient),
quarantine.csv and extra.csv. manifest.json holds metadata only (counts, fingerprint, column
names of the public schema, source file names) and stays plaintext. FHIR input encrypted by an
earlier run is read with the same keyring.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .catalogue import Catalogue, catalogue
from fedhaem_kernel.atrest import AtRestError, KeyProvider, text_writer
from fedhaem_kernel.csvcells import safe_row
from fedhaem_kernel.schema import NOT_TESTED_ATTR
from .errors import EtlError, Issue
from .features import bundle_to_row, rows_to_table
from .fhir import build_bundle, read_ndjson, validate_bundle, write_ndjson
from .quality import build_report, quality_summary, render_html
from .sources.common import SourceResult, file_info
from .sources.generic import read_generic
from .sources.iwgpm import find_files, read_iwgpm
from .table import fingerprint, write_table

OUTPUT_FILES = ("bundles.ndjson", "table.parquet", "table.csv", "quality.json", "quality.html",
                "quarantine.csv", "manifest.json")
# More than this share of patients rejected fails the run unless the caller raises it.
DEFAULT_MAX_REJECTED = 0.05


@dataclass
class EtlResult:
    out_dir: Path
    table: pd.DataFrame
    report: dict
    manifest: dict
    seconds: float


def detect_layout(paths: list[Path]) -> str:
    """'iwgpm', 'fhir' or 'csv' from the files given."""
    if find_files(paths):
        return "iwgpm"
    files = [p for p in paths if p.is_file()] + [q for p in paths if p.is_dir() for q in sorted(p.iterdir())]
    if files and all(p.suffix in (".ndjson", ".json", ".jsonl") for p in files):
        return "fhir"
    return "csv"


def _read_fhir(paths: list[Path], cat: Catalogue, keys: KeyProvider | None = None) -> tuple[SourceResult, list[dict]]:
    src = SourceResult(layout="fhir")
    bundles = []
    for p in paths:
        src.files.append(file_info(p))
        for line, b, issue in _bundles_of(p, keys):
            src.n_input_rows += 1
            if issue:
                src.rejected.append(issue)
            else:
                b["_line"] = (str(p), line)
                bundles.append(b)
    return src, bundles


def _bundles_of(path: Path, keys: KeyProvider | None):
    """read_ndjson of `path`, an encryption-at-rest problem (no or wrong keyring, altered file)
    turned into an EtlError naming the file."""
    try:
        yield from read_ndjson(path, keys)
    except AtRestError as e:
        raise EtlError(e.reason, file=e.path) from None


def run_etl(use_case: str, sources: list[str | Path], out_dir: str | Path,
            mapping: str | Path | None = None, layout: str = "auto",
            max_rejected_fraction: float = DEFAULT_MAX_REJECTED, validate: bool = True,
            keys: KeyProvider | None = None) -> EtlResult:
    """Run the ETL of one use case; raises EtlError (nothing written) on a fatal input error.
    With ``keys`` the outputs holding patient-level content are written encrypted at rest."""
    t0 = time.perf_counter()
    _check_out_dir(Path(out_dir))  # before the work: a bad --out fails in a second, not after the run
    cat = catalogue(use_case)
    paths = [Path(s) for s in sources]
    for p in paths:
        if not p.exists():
            raise EtlError("no such file or folder", file=str(p))
    if layout == "auto":
        layout = "csv" if mapping else detect_layout(paths)
    if layout == "iwgpm":
        files = find_files(paths)
        if not files:
            raise EtlError("not an IWG-PM layout: df_clinical.tsv not found", file=str(paths[0]))
        src = read_iwgpm(files, cat)
        bundles = None
    elif layout == "fhir":
        src, bundles = _read_fhir(paths, cat, keys)
    elif layout == "csv":
        src = read_generic(paths, cat, mapping)
        bundles = None
    else:
        raise EtlError(f"unknown layout {layout!r} (auto, iwgpm, csv, fhir)")

    extra_rejected: list[Issue] = []
    rows: list[dict] = []
    good_bundles: list[dict] = []
    conversions: list = []
    n_resources = 0
    invalid = 0
    # fields the mapping declares never tested: in every bundle, then the table's attrs
    declared = sorted(k for k, v in src.declared.items() if v == "not tested" and k in cat.schema.feature_names)
    if bundles is None:
        items = [(rec, build_bundle(rec, cat, declared)) for rec in src.records]
    else:
        items = [(None, b) for b in bundles]
    for rec, b in items:
        where = f"{rec.patient_id}: " if rec else ""
        if rec is None:
            f, line = b.pop("_line")
        problems = validate_bundle(b, where) if validate else []
        if problems:
            invalid += 1
            file = rec.source_file if rec else f
            row = rec.source_row if rec else line
            extra_rejected.append(Issue(file, row, None, "invalid FHIR: " + "; ".join(problems),
                                        rec.patient_id if rec else None))
            continue
        try:
            r = bundle_to_row(b, cat, conversions)
        except (ValueError, KeyError, TypeError) as e:
            extra_rejected.append(Issue(rec.source_file if rec else f, rec.source_row if rec else line,
                                        None, f"cannot read bundle: {e}", rec.patient_id if rec else None))
            continue
        if rec is None:
            pid = r.get(cat.schema.id_column)
            if not pid:
                extra_rejected.append(Issue(f, line, None, "bundle has no Patient identifier"))
                continue
            src.input_patient_ids.append(pid)
            _quarantine_out_of_range(r, cat, f, line, pid, src)
            missing = [x.name for x in cat.schema.features if x.required and r.get(x.name) is None]
            if missing:
                extra_rejected.append(Issue(f, line, missing[0], f"missing required value {missing[0]}", pid))
                continue
        n_resources += len(b.get("entry") or [])
        rows.append(r)
        good_bundles.append(b)
    if bundles is not None and conversions:
        seen = {}
        for col, frm, to, factor in conversions:
            seen.setdefault((col, frm), {"column": col, "from": frm, "to": to, "factor": factor,
                                         "how": "FHIR unit", "rows": 0})["rows"] += 1
        src.conversions.extend(seen.values())
    table = rows_to_table(rows, cat) if rows else pd.DataFrame(columns=["patient_id"])
    if bundles is not None and rows:  # FHIR input: what every bundle declares
        sets = [set(r.get("_not_tested") or ()) for r in rows]
        declared = sorted(set.intersection(*sets) & set(cat.schema.feature_names))
    if declared:
        # scores read a declared-untested lesion by their own rules (fl_engine.scores); Parquet
        # keeps attrs, so the declaration travels with the table to the registry and the node
        table.attrs[NOT_TESTED_ATTR] = declared
    if bundles is not None and len(table):
        dup = table[cat.schema.id_column].duplicated(keep=False)
        if dup.any():
            raise EtlError(f"duplicate patient ids across bundles: "
                           f"{', '.join(sorted(set(table.loc[dup, cat.schema.id_column])))[:200]}")
    fhir_stats = {"bundles": len(good_bundles), "resources": n_resources, "invalid": invalid,
                  "validated": validate, "fhir_version": "4.0 (validated with fhir.resources R4B)"}
    report = build_report(table, cat, src, fhir_stats, extra_rejected)
    n_in = len(table) + report["summary"]["rejected_patients"]
    if len(table) == 0:
        first = (src.rejected + extra_rejected)[:3]
        raise EtlError("no valid patient rows" + (": " + "; ".join(map(str, first)) if first else ""),
                       file=str(paths[0]))
    n_rej = report["summary"]["rejected_patients"]
    frac = n_rej / max(n_in, 1)
    if frac > max_rejected_fraction:
        reasons: dict[str, int] = {}
        for r in report["rejected"]:
            key = f"{r['column'] or '-'}: {r['reason']}"
            reasons[key] = reasons.get(key, 0) + 1
        top = "; ".join(f"{k} ({v})" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
        first = report["rejected"][0]
        raise EtlError(f"{n_rej} of {n_in} patients rejected ({frac:.1%}), above the limit of "
                       f"{max_rejected_fraction:.0%} (raise it with --max-rejected); most frequent: "
                       f"{top}; first at {first['file']} row {first['row']}", file=str(paths[0]))
    fp = fingerprint(table, cat.schema.id_column)
    manifest = {
        "use_case": cat.use_case, "schema_version": cat.schema.version,
        "patient_count": int(len(table)), "fingerprint": fp,
        "feature_schema": [c for c in table.columns],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [f["path"] for f in src.files], "layout": src.layout,
        "quality_summary": quality_summary(report),
        "time_unit": "months",
        "not_tested": declared,
    }
    out = Path(out_dir)
    _write_outputs(out, good_bundles, table, report, manifest, src, extra_rejected, keys)
    return EtlResult(out, table, report, manifest, time.perf_counter() - t0)


def _quarantine_out_of_range(row: dict, cat: Catalogue, file: str, line: int, pid: str,
                             src: SourceResult) -> None:
    """FHIR input: a value outside the schema's range or categories becomes missing, listed."""
    for f in cat.schema.features:
        v = row.get(f.name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if f.kind == "categorical":
            bad = bool(f.categories) and v not in f.categories
        else:
            x = float(v)
            bad = ((f.minimum is not None and x < f.minimum) or (f.maximum is not None and x > f.maximum))
        if bad and not f.required:
            unit = f" {f.unit}" if f.unit else ""
            what = (f"unknown category {v!r}" if f.kind == "categorical" else
                    f"impossible value {float(v):g}{unit}: outside [{f.minimum:g}, {f.maximum:g}]{unit}")
            src.quarantined.append(Issue(file, line, f.name, what, pid, "quarantined", str(v)))
            row[f.name] = None


def _check_out_dir(out: Path) -> None:
    """EtlError naming `out` when it cannot be the output folder (an existing file, or under one)."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "the output folder" if p == out else f"the output folder's parent {p}"
                raise EtlError(f"{what} is an existing file, not a folder; give --out a folder "
                               f"(new or an earlier ETL output)", file=str(p))
            if not os.access(p, os.W_OK | os.X_OK):
                raise EtlError("cannot write in this folder (permission denied)", file=str(p))
            return


def _write_outputs(out: Path, bundles, table, report, manifest, src, extra_rejected,
                   keys: KeyProvider | None = None) -> None:
    """Write into a temporary folder beside ``out`` and move the files in at the end, so an
    interrupted run never leaves a half-written dataset that looks complete."""
    _check_out_dir(out)  # again: the folder may have changed during the run
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".etl-", dir=out))
    except OSError as e:
        raise EtlError(f"cannot create the output folder: {e.strerror or e}", file=str(out)) from None
    try:
        write_ndjson(bundles, tmp / "bundles.ndjson", keys)
        write_table(table, tmp, keys=keys)
        with text_writer(tmp / "quality.json", keys) as fh:
            fh.write(json.dumps(report, indent=1, default=str))
        with text_writer(tmp / "quality.html", keys) as fh:
            fh.write(render_html(report))
        with text_writer(tmp / "quarantine.csv", keys, newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "row", "patient_id", "column", "reason", "source_row", "action", "value"])
            for i in list(src.rejected) + list(extra_rejected):
                raw = src_raw(src, i)
                w.writerow(safe_row([i.file, i.row if i.row is not None else "", i.patient_id or "",
                                     i.column or "", i.reason, json.dumps(raw, ensure_ascii=False) if raw else "",
                                     "patient rejected", ""]))
            for i in src.quarantined:
                w.writerow(safe_row([i.file, i.row if i.row is not None else "", i.patient_id or "",
                                     i.column or "", i.reason, "", "value set missing",
                                     i.value if i.value is not None else ""]))
        extras = sorted({k for r in src.records for k in r.extra})
        if extras:
            kept = set(table["patient_id"]) if len(table) else set()
            with text_writer(tmp / "extra.csv", keys, newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["patient_id", *extras])
                for r in src.records:
                    if r.patient_id in kept:
                        w.writerow(safe_row([r.patient_id, *(r.extra.get(k, "") for k in extras)]))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if (tmp / "extra.csv").exists():
            os.replace(tmp / "extra.csv", out / "extra.csv")
        elif (out / "extra.csv").exists():
            (out / "extra.csv").unlink()  # from an earlier run with another mapping
        for name in OUTPUT_FILES:  # manifest last: its presence marks a complete output
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def src_raw(src: SourceResult, issue: Issue) -> dict | None:
    return src.raw_rows.get((issue.file, issue.row))
