"""``map-check``: a dry run of the CSV reader that says, per schema field and per source column,
what the ETL would do with an export, and can write a starting mapping file.

Nothing is written besides the suggested mapping (and never over an existing file).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .catalogue import catalogue
from .errors import EtlError
from .features import bundle_to_row, rows_to_table
from .fhir import build_bundle
from .hospital import known_fields, load_mapping
from .pipeline import DEFAULT_MAX_REJECTED, detect_layout
from .sources.generic import read_generic


def map_check(use_case: str, sources: list[str | Path], mapping: str | Path | None = None) -> dict:
    """What an ETL run would do with these CSV/TSV files: fields, columns, refusals, counts."""
    cat = catalogue(use_case)
    paths = [Path(s) for s in sources]
    for p in paths:
        if not p.exists():
            raise EtlError("no such file or folder", file=str(p))
    if not mapping and detect_layout(paths) != "csv":
        raise EtlError("map-check reads CSV/TSV exports; an IWG-PM folder or FHIR bundles are read "
                       "by their own fixed layout", file=str(paths[0]))
    src = read_generic(paths, cat, mapping, strict=False)
    rows = [bundle_to_row(build_bundle(rec, cat), cat) for rec in src.records]
    table = rows_to_table(rows, cat) if rows else None
    n = len(src.records)
    conv_by_field: dict[str, list[str]] = {}
    for c in src.conversions:
        k = c.get("rows")
        conv_by_field.setdefault(c["column"], []).append(
            f"{c['from']} -> {c['to']} x{c['factor']:.4g}" + (f" ({k} rows)" if k else f" ({c.get('how', '')})"))
    fields = []
    for name, info in known_fields(cat).items():
        if info.kind in ("end_date", "dx_date") and name not in src.column_mapping:
            continue
        if name in ("patient_id", "who_class", "karyotype") and name not in src.column_mapping:
            continue
        entry = {"field": name, "kind": info.value_kind, "source": src.column_mapping.get(name)}
        if name in src.declared:
            entry["source"] = f"declared: {src.declared[name]}"
        col = table[name] if table is not None and name in table.columns and entry["source"] else None
        if col is not None:
            entry["completeness"] = round(float(col.notna().mean()), 4) if n else 0.0
            vals = col.dropna()
            if info.value_kind == "numeric" and len(vals):
                entry["values"] = (f"{vals.min():g} .. {vals.max():g} (median "
                                   f"{statistics.median(vals.tolist()):g})")
            elif len(vals):
                shown = vals.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
                entry["values"] = ", ".join(f"{k} {v}" for k, v in shown.value_counts().head(6).items())
        seen = src.values_seen.get(name)
        if seen:
            entry["source_values"] = ", ".join(f"{k!r} {v}" for k, v in list(seen.items())[:8])
        if name in conv_by_field:
            entry["conversions"] = "; ".join(conv_by_field[name])
        bound_to = (src.column_mapping.get(name) or "").rpartition(":")[2]
        k = sum(1 for i in src.quarantined if i.column in (name, bound_to))
        if k:
            entry["set_missing"] = k
        fields.append(entry)
    rejected_ids = {i.patient_id for i in src.rejected if i.patient_id}
    n_in = n + len(rejected_ids)
    frac = len(rejected_ids) / max(n_in, 1)
    refusals = list(src.refusals)
    if frac > DEFAULT_MAX_REJECTED:
        refusals.append(f"{len(rejected_ids)} of {n_in} patients would be rejected ({frac:.1%}), above "
                        f"the default limit of {DEFAULT_MAX_REJECTED:.0%}")
    return {
        "use_case": cat.use_case, "sources": [str(p) for p in paths],
        "mapping": str(mapping) if mapping else None,
        "patients": n_in, "would_reject": len(rejected_ids), "values_set_missing": len(src.quarantined),
        "values_converted_per_row": len(src.value_conversions),
        "fields": fields, "source_columns": src.column_status, "refusals": refusals,
        "rejected": [i.as_dict() for i in src.rejected[:20]],
        "warnings": [str(i) for i in src.warnings],
    }


def render(result: dict) -> str:
    """The map-check result as terminal text."""
    out = [f"map-check {result['use_case']}: {', '.join(result['sources'])}"
           + (f" with {result['mapping']}" if result["mapping"] else " (no mapping)"), ""]
    out.append(f"{'FIELD':<18} {'SOURCE':<34} {'COMPLETE':>8}  VALUES / CONVERSIONS")
    for f in result["fields"]:
        src = f["source"] or "-"
        comp = f"{f['completeness']:.0%}" if "completeness" in f else ""
        what = "; ".join(x for x in (f.get("values"), f"source {f['source_values']}" if f.get("source_values") else None,
                                     f"converted {f['conversions']}" if f.get("conversions") else None,
                                     f"{f['set_missing']} set missing" if f.get("set_missing") else None) if x)
        out.append(f"{f['field']:<18} {src[:34]:<34} {comp:>8}  {what}")
    out += ["", f"{'SOURCE COLUMN':<30} {'STATUS':<8} FIELD / DETAIL"]
    for c in result["source_columns"]:
        detail = " ".join(x for x in (c["field"], f"({c['detail']})" if c["detail"] else "") if x)
        out.append(f"{c['column'][:30]:<30} {c['status']:<8} {detail}")
    out += ["", f"patients: {result['patients']}, would be rejected: {result['would_reject']}, values that "
                f"would be set missing: {result['values_set_missing']}, values converted per row: "
                f"{result['values_converted_per_row']}"]
    for w in result["warnings"]:
        out.append(f"warning: {w}")
    if result["rejected"]:
        out.append("first rejections:")
        out += [f"  {r['patient_id']}: row {r['row']}, {r['column']}: {r['reason']}" for r in result["rejected"][:10]]
    if result["refusals"]:
        out.append("THE ETL WOULD STOP:")
        out += [f"  - {r}" for r in result["refusals"]]
    else:
        out.append("the ETL would run.")
    return "\n".join(out)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a YAML flow scalar


def suggest_mapping(result: dict, mapping: str | Path | None = None) -> str:
    """A starting mapping (YAML text) from a map-check result: every column bound so far, the
    values of each refused coded column to fill in, unknown columns to review, fields missing."""
    m = load_mapping(mapping)
    lines = ["# Suggested by fedhaem-node map-check; review every line (docs/etl-mapping.md).",
             f"use_case: {result['use_case']}", "fields:"]
    bound = {}
    for c in result["source_columns"]:
        if c["status"] == "bound" and c["field"] and (c["detail"] or "").startswith(("name", "mapping", "gene")):
            bound.setdefault(c["field"], c["column"])
    refused = {}
    for r in result["refusals"]:
        if "not mapped:" in r and "(" in r:
            head = r.split("column ", 1)[1]
            col = head.split(" (", 1)[0].strip("'\"")
            field = head.split(" (", 1)[1].split(")", 1)[0]
            refused[field] = col
    for name, rule in m.fields.items():
        if rule.kind != "column":
            lines.append(f"  {name}: {json.dumps(rule.model_dump(exclude_none=True, exclude={'has_constant', 'detect'}) | ({'constant': rule.constant} if rule.has_constant else {}), ensure_ascii=False)}")
    for field, col in bound.items():
        if field in m.fields and m.fields[field].kind != "column":
            continue
        rule = m.fields.get(field)
        if field in refused or (rule and rule.codes):
            seen = next((f.get("source_values", "") for f in result["fields"] if f["field"] == field), "")
            toks = [t.split("' ")[0].strip("'") for t in seen.split(", ") if t] if seen else []
            codes = ", ".join(f"{_q(t)}: TODO" for t in toks)
            if rule and rule.codes:
                codes = ", ".join(f"{_q(k)}: {_q(v) if v is not None else 'null'}" for k, v in rule.codes.items())
            lines.append(f"  {field}: {{column: {_q(col)}, codes: {{{codes}}}}}  # TODO: the schema value of each")
        elif rule and (rule.unit or rule.detect is not None):
            unit = _q(rule.unit) if rule.unit else "detect"
            lines.append(f"  {field}: {{column: {_q(col)}, unit: {unit}}}")
        else:
            lines.append(f"  {field}: {_q(col)}")
    for field, col in refused.items():
        if field not in bound:
            lines.append(f"  {field}: {{column: {_q(col)}, codes: {{}}}}  # TODO")
    if any("missing required column patient_id" in r for r in result["refusals"]):
        lines.append("  patient_id: TODO  # the column holding the patient id")
    unbound = [f for f in result["fields"] if not f["source"] and f["field"] not in bound]
    survival = [f["field"] for f in unbound if f["field"].endswith(("_months", "_event"))]
    if survival:
        lines.append("  # survival data not found; name its column if the export has it:")
        lines += [f"  # {f}: <column>" for f in survival]
    others = [f["field"] for f in unbound if f["field"] not in survival]
    if others:
        lines.append("  # not in the export; if never tested say so (a gene not tested is not negative):")
        lines += [f"  # {f}: {{constant: not_tested}}" for f in others]
    stopping = [c["column"] for c in result["source_columns"]
                if c["status"] == "unknown" and "looks like a gene" in (c["detail"] or "")]
    stopping += [c["column"] for c in result["source_columns"] if c["status"] == "ignored"]
    unknown = [c["column"] for c in result["source_columns"]
               if c["status"] == "unknown" and c["column"] not in stopping]
    lines.append("# read as nothing: bind a column under fields:, or keep it outside the schema under "
                 "extra:; the commented ones are read as nothing anyway")
    lines.append("ignore:" + ("" if stopping or unknown else " []"))
    lines += [f"  - {_q(c)}" for c in stopping]
    lines += [f"  # - {_q(c)}" for c in unknown]
    extra = [c for c in result["source_columns"] if c["status"] == "extra"]
    if extra:
        lines.append("extra:")
        lines += [f"  {c['field']}: {_q(c['column'])}" for c in extra]
    return "\n".join(lines) + "\n"
