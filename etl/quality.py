"""Quality report of one ETL run: JSON (machine) and HTML (node operator)."""
from __future__ import annotations

import html
import math
from collections import Counter
from datetime import datetime, timezone

import pandas as pd

from .catalogue import Catalogue
from .sources.common import SourceResult


def build_report(table: pd.DataFrame, cat: Catalogue, src: SourceResult, fhir_stats: dict,
                 extra_rejected: list | None = None) -> dict:
    """Completeness per column, out-of-range values, unit conversions, duplicates, dropped and
    rejected rows with reasons. Counts are patients unless said otherwise."""
    schema = cat.schema
    rejected = list(src.rejected) + list(extra_rejected or [])
    out_of_range = Counter(i.column for i in rejected if "impossible" in i.reason)
    quarantined = Counter(i.column for i in src.quarantined)
    q_out_of_range = sum(1 for i in src.quarantined if "impossible" in i.reason)
    per_row = Counter(i.column for i in src.value_conversions)
    cols = {}
    n = len(table)
    for c in table.columns:
        if c == schema.id_column:
            continue
        s = table[c]
        miss = int(s.isna().sum())
        entry = {"completeness": round(1 - miss / n, 4) if n else 0.0, "missing": miss}
        try:
            f = schema.feature(c)
            entry.update(kind=f.kind, unit=f.unit, group=f.group)
            if f.minimum is not None:
                entry["range"] = [f.minimum, f.maximum]
        except KeyError:
            entry.update(kind="numeric", unit="mo" if c.endswith("_months") else "")
        if s.dtype.kind == "f" and miss < n:
            entry.update(min=float(s.min()), max=float(s.max()), mean=round(float(s.mean()), 6))
        elif s.dtype == object and miss < n:
            entry["counts"] = {str(k): int(v) for k, v in s.value_counts().items()}
        entry["out_of_range_rejected"] = int(out_of_range.get(c, 0))
        entry["quarantined"] = int(quarantined.get(c, 0))
        if c in src.declared:
            entry["declared"] = src.declared[c]
        cols[c] = entry
    dups = [i for i in src.dropped if i.reason.startswith("duplicate")]
    dups += [i for i in rejected if i.reason.startswith("duplicate")]
    rejected_ids = sorted({i.patient_id for i in rejected if i.patient_id})
    summary = {
        "patients": int(n),
        "rejected_patients": len(rejected_ids),
        "rejected_rows": len(rejected),
        "dropped_rows": len(src.dropped),
        "duplicates": len(dups),
        "completeness_mean": round(sum(c["completeness"] for c in cols.values()) / len(cols), 4)
        if cols else 0.0,
        "columns_below_50pct": sorted(k for k, v in cols.items() if v["completeness"] < 0.5
                                      and k not in src.declared),
        "unit_conversions": len(src.conversions),
        "out_of_range": int(sum(out_of_range.values())) + q_out_of_range,
        "fhir_valid": fhir_stats.get("invalid", 0) == 0,
        # not announced (quality_summary keeps the keys the manager knows)
        "quarantined_values": len(src.quarantined),
        "values_converted_per_row": len(src.value_conversions),
        "not_tested": sorted(k for k, v in src.declared.items() if v == "not tested"),
        # empty for every patient without a declaration: the scores read these as unknown per
        # patient (counted as not computable where they matter), not as never tested
        "empty_undeclared": sorted(k for k, v in cols.items() if n and v["missing"] == n
                                   and k not in src.declared and k in schema.feature_names),
        "declared_constants": {k: v for k, v in sorted(src.declared.items()) if v != "not tested"},
        "source_columns_ignored": sum(1 for c in src.column_status if c["status"] == "ignored"),
        "source_columns_unknown": sum(1 for c in src.column_status if c["status"] == "unknown"),
    }
    return {
        "use_case": schema.use_case,
        "schema_version": schema.version,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "layout": src.layout,
        "summary": summary,
        "sources": src.files,
        "input_rows": src.n_input_rows,
        "column_mapping": src.column_mapping,
        "unmapped_source_columns": src.unmapped_columns,
        "unit_conversions": src.conversions,
        "value_conversions": [i.as_dict() for i in src.value_conversions],
        "value_conversions_by_column": dict(per_row),
        "source_columns": src.column_status,
        "columns": cols,
        "rejected": [i.as_dict() for i in rejected],
        "quarantined_values": [i.as_dict() for i in src.quarantined],
        "dropped_rows": [i.as_dict() for i in src.dropped],
        "warnings": [i.as_dict() for i in src.warnings],
        "fhir": fhir_stats,
    }


ANNOUNCED_SUMMARY = ("patients", "rejected_patients", "rejected_rows", "dropped_rows", "duplicates",
                     "completeness_mean", "columns_below_50pct", "unit_conversions", "out_of_range",
                     "fhir_valid")


def quality_summary(report: dict) -> dict:
    """The compact summary announced to the manager (no patient-level content; the keys the
    manager's metadata schema knows)."""
    return {k: report["summary"][k] for k in ANNOUNCED_SUMMARY if k in report["summary"]}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_html(report: dict) -> str:
    """A self-contained HTML page of the report."""
    s = report["summary"]
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Quality report {e(report['use_case'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}"
        ".low{background:#fde2e2}</style></head><body>",
        f"<h1>Data quality: {e(report['use_case'])} (schema {e(report['schema_version'])})</h1>",
        f"<p>Generated {e(report['generated_at'])}; layout {e(report['layout'])}; "
        f"{report['input_rows']} input rows.</p>",
        "<h2>Summary</h2><table>",
    ]
    for k, v in s.items():
        parts.append(f"<tr><th>{e(k)}</th><td>{_fmt(v if not isinstance(v, list) else ', '.join(v))}</td></tr>")
    parts.append("</table><h2>Sources</h2><table><tr><th>file</th><th>rows</th><th>encoding</th>"
                 "<th>delimiter</th><th>corrections</th><th>sha256</th></tr>")
    for f in report["sources"]:
        parts.append(f"<tr><td>{e(f['path'])}</td><td>{f.get('rows', '')}</td><td>{e(f.get('encoding', ''))}</td>"
                     f"<td>{e(repr(f.get('delimiter', '')))}</td><td>{e('; '.join(f.get('corrections', [])))}</td>"
                     f"<td><code>{e(f['sha256'][:16])}</code></td></tr>")
    parts.append("</table><h2>Unit conversions</h2><table><tr><th>column</th><th>source</th>"
                 "<th>from</th><th>to</th><th>factor</th><th>how</th></tr>")
    for c in report["unit_conversions"]:
        parts.append(f"<tr><td>{e(c['column'])}</td><td>{e(str(c.get('source_column', '')))}</td>"
                     f"<td>{e(c['from'])}</td><td>{e(c['to'])}</td><td>{_fmt(c['factor'])}</td>"
                     f"<td>{e(c.get('how', ''))}</td></tr>")
    parts.append("</table><h2>Columns</h2><table><tr><th>column</th><th>unit</th><th>completeness</th>"
                 "<th>missing</th><th>min</th><th>max</th><th>mean</th><th>rejected out of range</th></tr>")
    for name, c in report["columns"].items():
        cls = " class='low'" if c["completeness"] < 0.5 else ""
        parts.append(f"<tr{cls}><td>{e(name)}</td><td>{e(c.get('unit', ''))}</td>"
                     f"<td>{c['completeness']:.1%}</td><td>{c['missing']}</td><td>{_fmt(c.get('min'))}</td>"
                     f"<td>{_fmt(c.get('max'))}</td><td>{_fmt(c.get('mean'))}</td>"
                     f"<td>{c['out_of_range_rejected']}</td></tr>")
    parts.append("</table>")
    for title, key in (("Rejected rows", "rejected"),
                       ("Values set missing (patient kept)", "quarantined_values"),
                       ("Values converted per row", "value_conversions"),
                       ("Dropped rows", "dropped_rows"), ("Warnings", "warnings")):
        items = report.get(key, [])
        parts.append(f"<h2>{title} ({len(items)})</h2>")
        if items:
            parts.append("<table><tr><th>file</th><th>row</th><th>patient</th><th>column</th><th>reason</th></tr>")
            for i in items[:2000]:
                parts.append(f"<tr><td>{e(i['file'])}</td><td>{_fmt(i['row'])}</td><td>{_fmt(i['patient_id'])}</td>"
                             f"<td>{_fmt(i['column'])}</td><td>{e(i['reason'])}</td></tr>")
            parts.append("</table>")
    declared = {k: v.get("declared") for k, v in report["columns"].items() if v.get("declared")}
    if declared:
        parts.append("<h2>Declared in the mapping</h2><table><tr><th>column</th><th>declared</th></tr>")
        for k, v in declared.items():
            parts.append(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>")
        parts.append("</table>")
    if report["unmapped_source_columns"]:
        parts.append("<h2>Source columns not used</h2><p>" +
                     e(", ".join(report["unmapped_source_columns"])) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_text(report: dict) -> str:
    """Short plain-text view for the terminal (``fedhaem-node report``)."""
    s = report["summary"]
    lines = [f"Quality report: {report['use_case']} (schema {report['schema_version']}), "
             f"generated {report['generated_at']}",
             f"  patients in table : {s['patients']}",
             f"  rejected patients : {s['rejected_patients']} ({s['rejected_rows']} rows)",
             f"  values set missing: {s.get('quarantined_values', 0)} (patients kept; quarantine.csv)",
             f"  values converted per row: {s.get('values_converted_per_row', 0)}",
             f"  dropped rows      : {s['dropped_rows']} (duplicates {s['duplicates']})",
             f"  mean completeness : {s['completeness_mean']:.1%}",
             f"  unit conversions  : {s['unit_conversions']}",
             f"  FHIR valid        : {s['fhir_valid']}"]
    if s["columns_below_50pct"]:
        lines.append(f"  columns < 50% complete: {', '.join(s['columns_below_50pct'])}")
    if s.get("not_tested"):
        lines.append(f"  not tested (declared): {', '.join(s['not_tested'])}")
    if s.get("empty_undeclared"):
        lines.append(f"  empty for every patient, not declared: {', '.join(s['empty_undeclared'])} (the scores "
                     "read them as unknown; declare {constant: not_tested} for what is never tested)")
    if s.get("declared_constants"):
        lines.append("  declared constants: " + ", ".join(f"{k} = {v.removeprefix('constant ')}"
                                                          for k, v in s["declared_constants"].items()))
    by_col = Counter(i["column"] for i in report.get("quarantined_values", []))
    if by_col:
        lines.append("  values set missing by column: " + ", ".join(f"{k} {v}" for k, v in by_col.most_common(12)))
    for c in report["unit_conversions"]:
        lines.append(f"  converted {c['column']} from {c['from']} to {c['to']} (x{c['factor']:g}, {c.get('how', '')})")
    if report["rejected"]:
        lines.append("  rejected:")
        for i in report["rejected"][:20]:
            where = ", ".join(str(x) for x in (i["file"], f"row {i['row']}" if i["row"] else None,
                                                 f"column {i['column']}" if i["column"] else None) if x)
            lines.append(f"    {i['patient_id'] or '-'}: {where}: {i['reason']}")
        if len(report["rejected"]) > 20:
            lines.append(f"    ... {len(report['rejected']) - 20} more in quality.json")
    return "\n".join(lines)
