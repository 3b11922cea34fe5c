"""Generic hospital export: one CSV (or TSV...) per hospital, optionally more wide files joined
on the patient id and a long file of variants (one row per variant), read through synonyms for
column names, unit detection/conversion and an optional hospital mapping file."""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..catalogue import Catalogue, norm, norm_token
from ..compute import evaluate, parse_expression
from ..errors import EtlError, Issue, RowError
from ..hospital import FieldRule, HospitalMapping, check_mapping, load_mapping
from ..readers import TextTable, read_table
from ..records import (MISSING_TOKENS, PatientRecord, Variant, check_record, is_missing,
                       months_between, parse_binary, parse_code, parse_date, parse_number,
                       unit_factor)
from .common import SourceResult, dedupe_rows, file_info

# A column whose values fall outside its built-in codes in more than this share of its filled
# cells (and in more than one cell) is coded differently from what the ETL knows: the run stops
# and asks for the codes rather than blanking the column value by value.
UNMAPPED_SHARE_LIMIT = 0.05
# Kinds of column whose value, when unusable, makes the patient unusable (survival data).
CRITICAL_KINDS = ("id", "time", "event", "end_date", "dx_date")

VARIANT_COLUMNS = {
    "gene": ["gene", "gene_symbol", "hugo_symbol", "symbol", "hgnc_symbol"],
    "hgvs_c": ["hgvs_c", "cdna_change", "c_hgvs", "cdna", "hgvsc", "coding_change"],
    "hgvs_p": ["hgvs_p", "protein_change", "p_hgvs", "protein", "hgvsp", "aa_change"],
    "vaf": ["vaf", "allele_fraction", "af", "variant_allele_frequency", "t_vaf", "vaf_percent"],
    "variant_type": ["variant_type", "vt", "type", "variant_class", "variant_classification"],
}


@dataclass
class Col:
    """A source column bound to a field: kind is feature, time, event, end_date, dx_date,
    id, who, karyotype, gene, gene_vaf, vclass, embedding, part (one of a mapping's any_of /
    all_of columns) or extra (a field outside the schema)."""
    index: int
    header: str
    kind: str
    field: str
    unit: str | None = None
    unit_how: str = ""
    codes: dict | None = None  # the mapping's closed codes: normalised token -> value or None


def _synonym_index(cat: Catalogue, m: HospitalMapping) -> dict[str, tuple[str, str]]:
    idx: dict[str, tuple[str, str]] = {}

    def put(names, kind, field):
        for n in names:
            idx.setdefault(norm(n), (kind, field))

    # explicit hospital synonyms first, so they win over built-ins
    for field, names in m.synonyms.items():
        put(names, _kind_of(cat, field), field)
    put(cat.fields["patient_id"].synonyms + ["patient_id"], "id", "patient_id")
    for f in cat.schema.features:
        spec = cat.fields.get(f.name)
        if spec is None or spec.fhir in ("variant.gene",):
            continue
        put([f.name] + spec.synonyms, "vclass" if spec.fhir == "variant.class" else "feature", f.name)
    who_field = cat.who_class_column or "who_class"
    put(["who_class", who_field] + cat.fields["who_class"].synonyms, "who", who_field)
    put(cat.fields["karyotype"].synonyms, "karyotype", "karyotype")
    for ep, spec in cat.endpoints.items():
        put([f"{ep}_months"] + spec["time_synonyms"], "time", ep)
        put([f"{ep}_event"] + spec["event_synonyms"], "event", ep)
        put(spec.get("end_date_synonyms", []), "end_date", ep)
    put(cat.diagnosis_date_synonyms, "dx_date", "diagnosis_date")
    return idx


def _kind_of(cat: Catalogue, field: str) -> str:
    if field == "patient_id":
        return "id"
    if field.endswith("_months") and field[:-7] in cat.endpoints:
        return "time"
    if field.endswith("_event") and field[:-6] in cat.endpoints:
        return "event"
    if field in ("who_class", cat.who_class_column):
        return "who"
    if field == "karyotype":
        return "karyotype"
    if field == "diagnosis_date":
        return "dx_date"
    return "feature"


def _field_target(kind: str, field: str) -> str:
    return {"time": f"{field}_months", "event": f"{field}_event",
            "end_date": f"{field}_end_date"}.get(kind, field)


def _units_for(cat: Catalogue, kind: str, field: str) -> dict[str, float]:
    if kind == "time":
        return cat.time_units
    spec = cat.fields.get(field)
    return spec.units if spec else {}


def _split_unit(header: str) -> tuple[str, str | None]:
    h = header.strip()
    for o, c in (("(", ")"), ("[", "]")):
        if h.endswith(c) and o in h:
            i = h.rindex(o)
            return h[:i].strip(), h[i + 1:-1].strip()
    return h, None


def _explicit_kind(cat: Catalogue, field: str) -> tuple[str, str]:
    """(kind, field stem) of a field named in a mapping."""
    kind = _kind_of(cat, field)
    f = field
    if kind == "time":
        f = field[:-7]
    elif kind == "event":
        f = field[:-6]
    elif field.endswith("_end_date") and field[:-9] in cat.endpoints:
        kind, f = "end_date", field[:-9]
    elif field in cat.fields and cat.fields[field].fhir == "variant.gene":
        kind = "gene"
    elif field in cat.fields and cat.fields[field].fhir == "variant.class":
        kind = "vclass"
    return kind, f


def _bind_headers(t: TextTable, cat: Catalogue, m: HospitalMapping, syn, res: SourceResult,
                  strict: bool = True) -> tuple[list[Col], list[str]]:
    cols: list[Col] = []
    unmapped: list[str] = []
    rules = m.rules()
    explicit = {r.column: f for f, r in rules.items() if r.kind == "column"}
    parts = {c: f for f, r in rules.items() if r.kind in ("any_of", "all_of") for c in r.source_columns()}
    extras = {e["column"]: name for name, e in m.extra.items()}
    computed = {c: f for f, r in rules.items() if r.kind == "compute" for c in parse_expression(r.compute)[1]}
    ruled = set(rules)  # fields the mapping reads itself: no synonym binds a column to them
    ignored = set(m.ignore)
    genes = cat.genes
    fname = Path(t.path).name

    def status(h, what, field=None, detail=""):
        res.column_status.append({"file": fname, "column": h, "status": what, "field": field,
                                  "detail": detail})

    for i, h in enumerate(t.header):
        if not h:
            continue
        if h in ignored:
            status(h, "ignored")
            continue
        if h in explicit:
            field = explicit[h]
            kind, f = _explicit_kind(cat, field)
            _, hunit = _split_unit(h)
            rule = rules[field]
            cols.append(Col(i, h, kind, f, hunit, "header" if hunit else "", rule.code_lookup()))
            status(h, "bound", field, "mapping")
            continue
        if h in parts:
            field = parts[h]
            cols.append(Col(i, h, "part", field, None, "", rules[field].code_lookup()))
            status(h, "bound", field, f"mapping {rules[field].kind}")
            continue
        if h in extras:
            cols.append(Col(i, h, "extra", extras[h]))
            status(h, "extra", extras[h], "carried outside the schema")
            continue
        base, hunit = _split_unit(h)
        hn = norm(base)
        for cand_hn in (hn, hn.replace("-", "_"), norm(h), norm(h).replace("-", "_")):
            if cand_hn in syn:
                if cand_hn.startswith(hn):
                    hn = cand_hn
                else:  # "del(5q)": the parentheses were part of the name, not a unit
                    hn, hunit = cand_hn, None
                break
        hit = None
        if hn in syn:
            kind, f = syn[hn]
            unit, how = hunit, "header" if hunit else ""
            if kind == "time" and not unit:  # os_years, os_days ...
                for u in sorted(cat.time_units, key=len, reverse=True):
                    if hn.endswith("_" + norm(u)):
                        unit, how = u, "header"
                        break
            hit = Col(i, h, kind, f, unit, how)
        else:
            # name + unit suffix: hb_g_l, plt_10_9_l, os_days
            for key, (kind, f) in syn.items():
                if hn.startswith(key + "_"):
                    rest = hn[len(key) + 1:]
                    for u in _units_for(cat, kind, f):
                        if norm(u) == rest:
                            hit = Col(i, h, kind, f, u, "header")
                            break
                if hit:
                    break
        if hit:
            target = _field_target(hit.kind, hit.field)
            if target in ruled:
                status(h, "unknown", None, f"not read: the mapping reads {target} another way")
                unmapped.append(h)
            else:
                cols.append(hit)
                status(h, "bound", target, "name" + (f", unit from {hit.unit_how}" if hit.unit_how else ""))
            continue
        # genes: TP53, mut_TP53, TP53_mut, TP53_vaf; GENE_status only when the stem is written
        # like a gene symbol (performance_status, mrd_status are not genes)
        up = base.strip()
        cand, kind = up, "gene"
        low = up.lower()
        explicit_gene = False
        for pre in ("mut_", "mutation_", "gene_"):
            if low.startswith(pre):
                cand, explicit_gene = up[len(pre):], True
        for suf, k in (("_vaf", "gene_vaf"), ("_mut", "gene"), ("_mutation", "gene"), ("_status", "gene")):
            if low.endswith(suf):
                stem = up[: -len(suf)]
                if suf == "_status" and stem != stem.upper():
                    break
                cand, kind, explicit_gene = stem, k, True
        if cand in genes.derived_columns:
            unmapped.append(h)
            status(h, "unknown", None, "derived summary column, read as nothing")
            continue
        sym = genes.resolve(cand)
        if sym is not None and (explicit_gene or cand.isupper()):
            target = sym if kind == "gene" else f"{sym}_vaf"
            if kind == "gene" and sym in ruled:
                status(h, "unknown", None, f"not read: the mapping reads {sym} another way")
                unmapped.append(h)
                continue
            cols.append(Col(i, h, kind, sym, hunit if kind == "gene_vaf" else None,
                            "header" if hunit else ""))
            status(h, "bound", target, "gene symbol")
            continue
        if explicit_gene:
            reason = (f"unknown gene symbol {cand!r}; if {h!r} is not a gene, list it under "
                      f"'ignore:' in a mapping file (or bind it under 'fields:' / 'extra:')")
            if strict:
                raise EtlError(reason, file=t.path, row=1, column=h)
            res.refusals.append(f"{fname}, column {h!r}: {reason}")
            status(h, "unknown", None, "looks like a gene but is not a known symbol")
            unmapped.append(h)
            continue
        emb = [g for g in cat.schema.embeddings if g.matches(hn)]
        if emb:
            cols.append(Col(i, h, "embedding", hn))
            status(h, "bound", hn, "embedding")
            continue
        if h in computed:
            status(h, "bound", computed[h], "used by compute")
            continue
        unmapped.append(h)
        status(h, "unknown", None, "no field by this name; bind it, ignore it or carry it as extra")
    seen: dict[tuple[str, str], str] = {}
    for c in cols:
        key = (c.kind, c.field)
        if c.kind not in ("embedding", "part", "extra") and key in seen:
            raise EtlError(f"columns {seen[key]!r} and {c.header!r} both map to "
                           f"{_field_target(c.kind, c.field)}; name one under 'fields:' in a "
                           f"mapping file (and the other under 'ignore:')", file=t.path, row=1,
                           column=c.header)
        seen[key] = c.header
    return cols, unmapped


def _is_variant_file(t: TextTable) -> bool:
    hn = {norm(h) for h in t.header}
    return bool(hn & set(VARIANT_COLUMNS["gene"]))


def read_generic(paths: list[Path], cat: Catalogue, mapping: str | Path | None,
                 strict: bool = True) -> SourceResult:
    """Read hospital CSV export(s) into PatientRecords (schema units, times in months).

    strict=False (map-check's dry run) collects what would stop the run in ``refusals``
    instead of raising, and reads on."""
    m = load_mapping(mapping)
    check_mapping(m, cat)
    res = SourceResult(layout="csv")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".csv", ".tsv", ".txt"))
        else:
            files.append(p)
    if not files:
        raise EtlError("no CSV/TSV files found", file=str(paths[0]) if paths else None)
    if m.codes:
        cat = copy.deepcopy(cat)  # the catalogue is shared: hospital codes stay in this run
    added = {x.strip().lower() for x in m.missing_values} - MISSING_TOKENS
    MISSING_TOKENS.update(added)
    try:
        return _read_generic(files, cat, m, mapping, res, strict)
    finally:
        MISSING_TOKENS.difference_update(added)


def _read_generic(files, cat: Catalogue, m: HospitalMapping, mapping, res: SourceResult,
                  strict: bool = True) -> SourceResult:
    for field, codes in m.codes.items():
        spec = cat.fields.get(field)
        if spec is None:
            raise m.error(["codes", field], f"no codes for {field!r}: it is not a coded field")
        for canon, toks in codes.items():
            spec.codes.setdefault(canon, [])
            spec.codes[canon] = list(spec.codes[canon]) + list(toks)

    syn = _synonym_index(cat, m)
    tables = [read_table(f, m.delimiter, m.encoding) for f in files]
    wide = [t for t in tables if not _is_variant_file(t)]
    long = [t for t in tables if _is_variant_file(t)]
    if not wide:
        raise EtlError("no patient-level file (every file looks like a variant list)", file=str(files[0]))
    for t in tables:
        res.files.append(file_info(t.path, t))
        for line, reason in t.dropped:
            res.dropped.append(Issue(t.path, line, None, reason, None, "warning"))
    rules = m.rules()
    headers = {h for t in wide for h in t.header}
    for field, rule in rules.items():
        cols_used = rule.source_columns() + (parse_expression(rule.compute)[1] if rule.kind == "compute" else [])
        for col in cols_used:
            if col not in headers:
                path = ["fields", field] if field in m.fields else ["columns", field]
                raise m.error(path, f"the mapping reads column {col!r} for {field}, but "
                                    f"{', '.join(Path(t.path).name for t in wide)} has no such column")
    for name, e in m.extra.items():
        if e["column"] not in headers:
            raise m.error(["extra", name], f"no column {e['column']!r} in the source")
    for col in m.ignore:
        if col not in headers:
            res.warnings.append(Issue(m.source or "", None, col, "the mapping ignores this column, "
                                      "but no source file has it", None, "warning"))
    for field, rule in rules.items():
        if rule.kind == "constant":
            res.declared[field] = "not tested" if rule.not_tested else f"constant {rule.constant}"

    main = wide[0]
    bound = []
    for t in wide:
        cols, unmapped = _bind_headers(t, cat, m, syn, res, strict)
        ids = [c for c in cols if c.kind == "id"]
        if not ids:
            msg = ("missing required column patient_id (accepted names: "
                   f"{', '.join(cat.fields['patient_id'].synonyms[:8])}, ...; or bind it: "
                   "fields: {patient_id: <column>})")
            if strict:
                raise EtlError(msg, file=t.path, row=1)
            # dry run: read on with the line number as the id, to check everything else
            res.refusals.append(f"{Path(t.path).name}: {msg}")
            t.header.append("(line)")
            for raw, line in zip(t.rows, t.lines):
                raw.append(f"line {line}")
            ids = [Col(len(t.header) - 1, "(line)", "id", "patient_id")]
            cols.append(ids[0])
        computes = {}
        for field, rule in rules.items():
            if rule.kind == "compute":
                tree, used = parse_expression(rule.compute)
                if all(u in t.header for u in used):
                    computes[field] = (tree, {u: t.header.index(u) for u in used})
        bound.append((t, cols, ids[0], computes))
        res.unmapped_columns += [f"{Path(t.path).name}:{h}" for h in unmapped]
        for c in cols:
            if c.kind not in ("id", "embedding", "part", "extra"):
                res.column_mapping[_field_target(c.kind, c.field)] = f"{Path(t.path).name}:{c.header}"
        for field, rule in rules.items():
            if rule.kind in ("any_of", "all_of"):
                res.column_mapping[field] = (f"{rule.kind.replace('_', ' ')}: " +
                                             ", ".join(f"{Path(t.path).name}:{c}" for c in rule.source_columns()))
            elif rule.kind == "compute" and field in computes:
                res.column_mapping[field] = f"compute: {rule.compute}"
    present = {(c.kind, c.field) for _, cols, _, _ in bound for c in cols}
    present |= {("feature", f) for f in rules}
    for name in cat.required_columns:
        f = cat.schema.feature(name)
        if ("feature", f.name) not in present and ("who", f.name) not in present:
            spec = cat.fields[f.name]
            raise EtlError(f"missing required column {f.name} (accepted names: "
                           f"{', '.join([f.name] + spec.synonyms[:6])}; or bind it: fields: "
                           f"{{{f.name}: <column>}})", file=main.path, row=1, column=f.name)

    records: dict[str, PatientRecord] = {}
    raw_of: dict[tuple[str, int], dict] = {}
    rejected_ids: set[str] = set()
    for n, (t, cols, idc, computes) in enumerate(bound):
        _check_codes(t, cols, cat, rules, res, strict)
        factors = _column_factors(t, cols, cat, m, res)
        keyed = []
        for raw, line in zip(t.rows, t.lines):
            pid = raw[idc.index].strip() if len(raw) > idc.index else ""
            if len(raw) != len(t.header):
                res.rejected.append(Issue(t.path, line, None, f"{len(raw)} fields, header has "
                                          f"{len(t.header)} (wrong delimiter or stray text)", pid or None))
                res.raw_rows[(t.path, line)] = dict(zip(t.header, raw))
                if pid:
                    rejected_ids.add(pid)
                continue
            if not pid:
                res.dropped.append(Issue(t.path, line, idc.header, "stray row: no patient id", None, "warning"))
                continue
            if all(is_missing(raw[c.index]) for c in cols if c.kind != "id"):
                res.dropped.append(Issue(t.path, line, None, "stray row: no data besides the id "
                                         f"{pid!r}", None, "warning"))
                continue
            if n > 0 and pid not in records and pid not in rejected_ids:
                res.dropped.append(Issue(t.path, line, idc.header, "stray row: patient not in "
                                         f"{Path(main.path).name}", pid, "warning"))
                continue
            keyed.append((pid, line, tuple(raw)))
        if n == 0:
            res.n_input_rows = len(t.rows) + len(t.dropped)
            res.input_patient_ids = sorted({k[0] for k in keyed} | rejected_ids)
        skip, conflicting = dedupe_rows(keyed, t.path, res)
        rejected_ids |= conflicting
        detected: list[tuple[Col, str, float]] = []
        for pid, line, raw in keyed:
            if line in skip or pid in rejected_ids:
                continue
            rec = records.get(pid)
            if rec is None:
                rec = PatientRecord(patient_id=pid, source_file=t.path, source_row=line)
            quarantined: list[tuple[str, str, str]] = []
            conv: list[tuple[Col, str, float, float, float]] = []
            try:
                _fill(rec, raw, t, cols, factors, cat, m, rules, computes, quarantined, conv)
            except RowError as err:
                res.rejected.append(Issue(t.path, line, err.column, err.reason, pid))
                res.raw_rows[(t.path, line)] = dict(zip(t.header, raw))
                rejected_ids.add(pid)
                records.pop(pid, None)
                continue
            for col, reason, tok in quarantined:
                res.quarantined.append(Issue(t.path, line, col, reason, pid, "quarantined", tok))
            for c, unit, raw_v, fac, value in conv:
                target = _field_target(c.kind, c.field)
                res.value_conversions.append(Issue(
                    t.path, line, c.header, f"{raw_v:g} read as {unit} (detected per row), "
                    f"converted to {value:g} {_target_unit(cat, c)}", pid, "converted", f"{raw_v:g}"))
                detected.append((c, unit, fac))
                del target
            records[pid] = rec
            if n == 0:
                raw_of[(t.path, line)] = dict(zip(t.header, raw))
        _summarise_detected(t, detected, cat, res)
    for t in long:
        _read_variants(t, records, rejected_ids, cat, m, res)
    for pid, rec in records.items():
        if pid in rejected_ids:
            continue
        try:
            _apply_constants(rec, rules, cat)
            _finish(rec, cat)
            for col, reason, value in check_record(rec, cat):
                res.quarantined.append(Issue(rec.source_file, rec.source_row, col, reason, pid,
                                             "quarantined", f"{value:g}" if isinstance(value, float) else str(value)))
        except RowError as err:
            res.rejected.append(Issue(rec.source_file, rec.source_row, err.column, err.reason, pid))
            if (rec.source_file, rec.source_row) in raw_of:
                res.raw_rows[(rec.source_file, rec.source_row)] = raw_of[(rec.source_file, rec.source_row)]
            continue
        res.records.append(rec)
    return res


def _target_unit(cat: Catalogue, c: Col) -> str:
    if c.kind == "time":
        return "mo"
    try:
        return cat.schema.feature(c.field).unit
    except KeyError:
        return ""


def _summarise_detected(t: TextTable, detected, cat: Catalogue, res: SourceResult) -> None:
    """One unit_conversions entry per column and detected unit (with its number of values)."""
    counts: dict[tuple[str, str, str, float], int] = {}
    for c, unit, fac in detected:
        key = (_field_target(c.kind, c.field), c.header, unit, fac)
        counts[key] = counts.get(key, 0) + 1
    for (target, header, unit, fac), k in counts.items():
        res.conversions.append({"column": target, "source_column": header, "file": t.path,
                                "from": unit, "to": cat.schema.feature(target).unit if target in
                                cat.schema.feature_names else "", "factor": fac,
                                "how": f"detected per row ({k} value{'s' if k != 1 else ''})",
                                "rows": k})


def _parse_coded(tok, c: Col, cat: Catalogue, value_kind: str):
    """A yes/no, event or categorical cell: the mapping's closed codes, else the built-in ones."""
    if c.codes is not None:
        key = norm_token(tok) if tok is not None else ""
        if key in c.codes:
            v = c.codes[key]
            return None if v is None else (int(v) if value_kind in ("binary", "event") else v)
        if is_missing(tok):
            return None
        raise RowError(c.header, f"value {str(tok)!r} is not in the mapping's codes "
                                 f"({', '.join(repr(k) for k in c.codes)})")
    if value_kind == "event":
        return parse_binary(tok, c.header, cat.event_codes)
    if value_kind == "binary":
        return parse_binary(tok, c.header, cat.binary_codes)
    spec = cat.fields.get(c.field)
    if spec is None or not spec.codes:
        return None if is_missing(tok) else str(tok).strip()
    return parse_code(tok, c.header, spec)


def _value_kind(c: Col, cat: Catalogue) -> str | None:
    """binary, event, categorical (coded columns) or None."""
    if c.kind in ("gene", "vclass", "part"):
        return "binary"
    if c.kind == "event":
        return "event"
    if c.kind == "who":
        spec = cat.fields.get(c.field)
        return "categorical" if (spec and spec.codes) or c.codes is not None else None
    if c.kind == "feature":
        k = cat.schema.feature(c.field).kind
        return k if k in ("binary", "categorical") else None
    return None


def _check_codes(t: TextTable, cols: list[Col], cat: Catalogue, rules: dict[str, FieldRule],
                 res: SourceResult, strict: bool) -> None:
    """Refuse a coded column whose values the codes do not cover (names the values and counts).

    With the mapping's closed codes any value not listed is refused; with the built-in codes,
    a column with more than UNMAPPED_SHARE_LIMIT of its filled cells unknown is refused (a
    stray typo is quarantined row by row instead)."""
    for c in cols:
        vk = _value_kind(c, cat)
        if vk is None:
            continue
        seen: dict[str, int] = {}
        bad: dict[str, int] = {}
        filled = 0
        for raw in t.rows:
            if len(raw) != len(t.header):
                continue
            tok = raw[c.index]
            key = tok.strip()
            seen[key] = seen.get(key, 0) + 1
            if is_missing(tok) and (c.codes is None or norm_token(tok) not in c.codes):
                continue
            filled += 1
            try:
                _parse_coded(tok, c, cat, vk)
            except RowError:
                bad[key] = bad.get(key, 0) + 1
        target = c.field if c.kind == "part" else _field_target(c.kind, c.field)
        res.values_seen[f"{target}:{c.header}" if c.kind == "part" else target] = dict(
            sorted(seen.items(), key=lambda kv: -kv[1])[:20])
        numeric_sex = (c.field == "sex" and c.codes is None and
                       {k for k in seen if not is_missing(k)} & {"1", "2"})
        if numeric_sex and not bad:
            res.warnings.append(Issue(t.path, None, c.header, "sex read from numeric codes as ISO "
                                      "5218 (1 = M, 2 = F); if the export means otherwise, declare "
                                      "codes for sex in a mapping", None, "warning"))
        if not bad:
            continue
        n_bad = sum(bad.values())
        share = n_bad / max(filled, 1)
        if c.codes is None and (share <= UNMAPPED_SHARE_LIMIT or n_bad == 1):
            continue  # a stray value: quarantined in its row
        shown = ", ".join(f"{k!r} ({v} of {filled} filled cells)" for k, v in
                          sorted(bad.items(), key=lambda kv: -kv[1])[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        known = sorted(k for k in seen if k not in bad and not is_missing(k))[:10]
        field = target if c.kind != "part" else c.field
        how = ("the mapping's codes do not list them" if c.codes is not None else
               f"{share:.0%} of the filled cells are not in the built-in codes")
        iso = (" The built-in codes read 1 as M and 2 as F (ISO 5218); an export coding "
               "0/1 must say which is which." if c.field == "sex" and c.codes is None else "")
        example = ", ".join(f"{k!r}: ..." for k in list(bad)[:3] + known[:3])
        msg = (f"column {c.header!r} ({field}): {len(bad)} value(s) not mapped: {shown}{more}; "
               f"{how}.{iso} Declare them in the mapping: fields: {{{field}: {{column: "
               f"{c.header!r}, codes: {{{example}}}}}}} (null reads a value as missing)")
        if strict:
            raise EtlError(msg, file=t.path, column=c.header)
        res.refusals.append(f"{Path(t.path).name}: {msg}")


def _column_factors(t: TextTable, cols: list[Col], cat: Catalogue, m: HospitalMapping,
                    res: SourceResult) -> dict[int, float | tuple]:
    """Per numeric column, the factor to the schema unit: mapping > header > per-row detection
    (the mapping's ``unit: detect`` or a field with ``detect`` units) > inferred > schema.
    A per-row column gets ("detect", units, factors, range, typical) instead of a factor."""
    factors: dict[int, float | tuple] = {}
    rules = m.rules()
    for c in cols:
        detect = None
        if c.kind == "time":
            units, target, typical = cat.time_units, "mo", cat.time_typical
            rule = rules.get(f"{c.field}_months")
            declared = m.units.get(f"{c.field}_months") or (rule.unit if rule else None)
        elif c.kind in ("feature", "gene_vaf"):
            if c.kind == "gene_vaf":
                units, target = cat.fields["tp53_maxvaf"].units, "1"
                typical = None
                declared = m.units.get(f"{c.field}_vaf")
                rule = None
            else:
                f = cat.schema.feature(c.field)
                if f.kind != "numeric":
                    continue
                spec = cat.fields[c.field]
                units, target, typical = spec.units, f.unit, spec.typical
                rule = rules.get(c.field)
                declared = m.units.get(c.field) or (rule.unit if rule else None)
                if rule is not None and rule.detect:
                    detect = rule.detect
                elif not declared and not c.unit and spec.detect:
                    detect = spec.detect
                if detect:
                    facs = [unit_factor(units, u) for u in detect]
                    factors[c.index] = ("detect", list(detect), facs, (f.minimum, f.maximum), typical)
                    continue
        else:
            continue
        unit, how = (declared, "declared in mapping") if declared else (c.unit, c.unit_how)
        if unit:
            fac = unit_factor(units, unit) if units else (1.0 if unit == target else None)
            if fac is None:
                raise EtlError(f"unit {unit!r} is not accepted for {_field_target(c.kind, c.field)} "
                               f"(accepted: {', '.join(units) or target})", file=t.path, row=1,
                               column=c.header)
        else:
            fac, how = 1.0, ""
            vals = []
            for raw in t.rows:
                if len(raw) == len(t.header):
                    try:
                        v, cu, _ = parse_number(raw[c.index], c.header)
                    except RowError:
                        continue
                    if v is not None and cu is None:
                        vals.append(v)
            if vals and typical:
                med = statistics.median(vals)
                ok = {f for f in set(units.values()) if typical[0] <= med * f <= typical[1]}
                if 1.0 not in ok and len(ok) == 1:
                    fac = ok.pop()
                    unit = next(u for u, f in units.items() if f == fac)
                    how = f"inferred from the median {med:g}"
                    res.warnings.append(Issue(t.path, None, c.header, f"no unit given; {how} the "
                                              f"values look like {unit} and were converted to {target}",
                                              None, "warning"))
                elif 1.0 not in ok:
                    res.warnings.append(Issue(t.path, None, c.header, f"no unit given and the median "
                                              f"{med:g} is unusual for {target}; read as {target}",
                                              None, "warning"))
            if c.kind == "gene_vaf" and vals and max(vals) > 1 and max(vals) <= 100:
                fac, unit, how = 0.01, "%", "inferred (values above 1)"
        factors[c.index] = fac
        if fac != 1.0:
            res.conversions.append({"column": _field_target(c.kind, c.field), "source_column": c.header,
                                    "file": t.path, "from": unit, "to": target, "factor": fac,
                                    "how": how})
    return factors


def _detect_unit(v: float, c: Col, spec: tuple) -> tuple[str, float]:
    """(unit, factor) for one value of a per-row column; RowError when no unit or several fit."""
    _, units, facs, (lo, hi), typical = spec
    fits = [(u, f) for u, f in zip(units, facs)
            if (lo is None or v * f >= lo) and (hi is None or v * f <= hi)]
    if len(fits) > 1 and typical:
        typ = [(u, f) for u, f in fits if typical[0] <= v * f <= typical[1]]
        fits = typ if len(typ) == 1 else fits
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise RowError(c.header, f"impossible value {v:g}: outside [{lo:g}, {hi:g}] read as any "
                                 f"of {', '.join(units)}")
    raise RowError(c.header, f"ambiguous unit for {v:g}: plausible as {' or '.join(u for u, _ in fits)}")


def _convert(v: float, cell_unit: str | None, col: Col, cat: Catalogue, factor,
             res_units: dict[str, float], conv: list | None = None) -> float:
    if cell_unit is None:
        if isinstance(factor, tuple):
            unit, f = _detect_unit(v, col, factor)
            if f != 1.0 and conv is not None:
                conv.append((col, unit, v, f, v * f))
            return v * f
        return v * factor
    f = unit_factor(res_units, cell_unit)
    if f is None:
        raise RowError(col.header, f"unknown unit {cell_unit!r} in the cell")
    return v * f


def _set_value(rec: PatientRecord, cat: Catalogue, field: str, value, genes_seen: dict) -> None:
    """Store a value read by a mapping rule (any_of, all_of, compute, constant) on its field."""
    spec = cat.fields.get(field)
    if spec is not None and spec.fhir in ("variant.gene", "variant.class"):
        genes_seen[field] = value
    elif field == cat.who_class_column:
        rec.who_class = value
    else:
        rec.values[field] = value


def _fill(rec: PatientRecord, raw: tuple, t: TextTable, cols: list[Col], factors, cat: Catalogue,
          m: HospitalMapping, rules: dict | None = None, computes: dict | None = None,
          quarantined: list | None = None, conv: list | None = None) -> None:
    """Read one row into `rec`. A cell that cannot be read becomes missing and is listed in
    `quarantined` (column, reason, cell), unless it carries survival data or a required field:
    then RowError rejects the patient."""
    rules = rules or {}
    quarantined = [] if quarantined is None else quarantined
    genes_seen = getattr(rec, "_genes", {})
    vafs = getattr(rec, "_vafs", {})
    emb: dict[str, dict[int, float | None]] = {}
    parts: dict[str, list] = {}
    for c in cols:
        tok = raw[c.index]
        if c.kind == "id":
            continue
        try:
            _fill_cell(rec, c, tok, factors, cat, m, genes_seen, vafs, emb, parts, conv)
        except RowError as err:
            required = c.kind in CRITICAL_KINDS or (
                c.kind == "feature" and cat.schema.feature(c.field).required)
            if required:
                raise
            quarantined.append((err.column or c.header, err.reason, tok))
            if c.kind == "part":
                parts.setdefault(c.field, []).append(None)
            elif c.kind in ("gene", "vclass"):
                genes_seen.setdefault(c.field, None)
            elif c.kind == "feature":
                rec.values.setdefault(c.field, None)
    for field, vals in parts.items():
        kind = rules[field].kind
        if kind == "any_of":
            v = 1 if 1 in vals else (0 if all(x == 0 for x in vals) else None)
        else:
            v = 0 if 0 in vals else (1 if all(x == 1 for x in vals) else None)
        _set_value(rec, cat, field, v, genes_seen)
    for field, (tree, idx) in (computes or {}).items():
        values = {}
        for col, i in idx.items():
            try:
                values[col] = parse_number(raw[i], col)[0]
            except RowError as err:
                quarantined.append((col, err.reason + f" (used by compute for {field})", raw[i]))
                values[col] = None
        _set_value(rec, cat, field, evaluate(tree, values), genes_seen)
    for prefix, vals in emb.items():
        known = [v for v in vals.values() if v is not None]
        if not known:
            continue
        if len(known) != len(vals):
            missing = [f"{prefix}_{k}" for k, v in vals.items() if v is None][0]
            quarantined.append((missing, f"incomplete {prefix} feature vector (missing cells): "
                                         f"the whole vector is left out", ""))
            continue
        rec.embeddings[prefix] = [vals[k] for k in sorted(vals)]
    rec._genes = genes_seen
    rec._vafs = vafs


def _fill_cell(rec, c: Col, tok, factors, cat: Catalogue, m: HospitalMapping, genes_seen, vafs,
               emb, parts, conv) -> None:
    if c.kind == "who":
        vk = _value_kind(c, cat)
        rec.who_class = _parse_coded(tok, c, cat, vk) if vk else (None if is_missing(tok) else tok)
    elif c.kind == "karyotype":
        rec.karyotype = None if is_missing(tok) else tok
    elif c.kind == "feature":
        f = cat.schema.feature(c.field)
        spec = cat.fields[c.field]
        if f.kind == "numeric":
            v, cu, _ = parse_number(tok, c.header)
            if v is not None:
                rec.values[c.field] = _convert(v, cu, c, cat, factors.get(c.index, 1.0), spec.units, conv)
            elif c.field not in rec.values:
                rec.values[c.field] = None
        else:
            v = _parse_coded(tok, c, cat, f.kind)
            if v is not None or c.field not in rec.values:
                rec.values[c.field] = v
    elif c.kind in ("gene", "vclass"):
        genes_seen[c.field] = _parse_coded(tok, c, cat, "binary")
    elif c.kind == "part":
        parts.setdefault(c.field, []).append(_parse_coded(tok, c, cat, "binary"))
    elif c.kind == "extra":
        if not is_missing(tok):
            rec.extra[c.field] = str(tok).strip()
    elif c.kind == "gene_vaf":
        v, cu, _ = parse_number(tok, c.header)
        if v is not None:
            vafs[c.field] = _convert(v, cu, c, cat, factors.get(c.index, 1.0),
                                     cat.fields["tp53_maxvaf"].units)
    elif c.kind == "time":
        v, cu, _ = parse_number(tok, c.header)
        if v is not None:
            rec._times = getattr(rec, "_times", {})
            rec._times[c.field] = _convert(v, cu, c, cat, factors.get(c.index, 1.0), cat.time_units)
    elif c.kind == "event":
        rec._events = getattr(rec, "_events", {})
        rec._events[c.field] = _parse_coded(tok, c, cat, "event")
    elif c.kind == "end_date":
        rec._ends = getattr(rec, "_ends", {})
        rec._ends[c.field] = parse_date(tok, c.header, m.date_format)
    elif c.kind == "dx_date":
        rec._dx = parse_date(tok, c.header, m.date_format)
    elif c.kind == "embedding":
        prefix, _, k = c.field.rpartition("_")
        try:
            v, _, _ = parse_number(tok, c.header)
        except RowError:
            emb.setdefault(prefix, {})[int(k)] = None
            raise
        emb.setdefault(prefix, {})[int(k)] = v


def _apply_constants(rec: PatientRecord, rules: dict[str, FieldRule], cat: Catalogue) -> None:
    """The mapping's declared constants: not_tested leaves the field missing (a gene not
    tested is not studied, so it reads missing, never 0); a value is set for every patient."""
    genes = getattr(rec, "_genes", {})
    for field, rule in rules.items():
        if rule.kind != "constant":
            continue
        if rule.not_tested or rule.constant is None:
            genes.pop(field, None)
            if field in rec.values:
                rec.values[field] = None
            continue
        f = cat.schema.feature(field)
        v = float(rule.constant) if f.kind == "numeric" else (int(rule.constant) if f.kind == "binary"
                                                               else rule.constant)
        _set_value(rec, cat, field, v, genes)
    rec._genes = genes


def _finish(rec: PatientRecord, cat: Catalogue) -> None:
    """Turn gene flags, VAFs, counts, times, events and dates into the record's final form."""
    genes = getattr(rec, "_genes", {})
    vafs = getattr(rec, "_vafs", {})
    classes = cat.genes.variant_classes
    studied = set(rec.genes_studied or [])
    for name, flag in genes.items():
        if flag is None:
            continue
        if name in classes:
            gene, vtype = classes[name]
            studied.add(gene)
            if flag and not any(v.gene == gene and v.variant_type == vtype for v in rec.variants):
                rec.variants.append(Variant(gene, variant_type=vtype))
        else:
            studied.add(name)
            if flag and not any(v.gene == name for v in rec.variants):
                rec.variants.append(Variant(name, vaf=vafs.get(name)))
            elif not flag and any(v.gene == name for v in rec.variants):
                raise RowError(name, f"{name} is 0 but a {name} variant is listed")
    n_tp53 = rec.values.pop("tp53_count", None)
    max_vaf = rec.values.pop("tp53_maxvaf", None)
    tp = [v for v in rec.variants if v.gene == "TP53"]
    if n_tp53 is not None:
        if n_tp53 != int(n_tp53) or n_tp53 < 0:
            raise RowError("tp53_count", f"impossible TP53 mutation count {n_tp53:g}")
        if genes.get("TP53") == 0 and n_tp53 > 0:
            raise RowError("tp53_count", "TP53 is 0 but the TP53 mutation count is above 0")
        studied.add("TP53")
        while len(tp) < n_tp53:
            v = Variant("TP53")
            rec.variants.append(v)
            tp.append(v)
        if len(tp) > n_tp53:
            raise RowError("tp53_count", f"TP53 mutation count {n_tp53:g} but {len(tp)} TP53 variants")
    if max_vaf is not None and tp and all(v.vaf is None for v in tp):
        tp[0].vaf = max_vaf
    elif max_vaf is not None and max_vaf > 0 and not tp:
        raise RowError("tp53_maxvaf", "TP53 VAF above 0 but no TP53 mutation")
    if studied or rec.genes_studied is not None:
        rec.genes_studied = sorted(studied)
    times = getattr(rec, "_times", {})
    events = getattr(rec, "_events", {})
    ends = getattr(rec, "_ends", {})
    dx = getattr(rec, "_dx", None)
    for ep in cat.endpoints:
        t = times.get(ep)
        if t is None and ep in ends and ends[ep] is not None:
            if dx is None:
                raise RowError("diagnosis_date", f"{ep} end date given without a diagnosis date")
            t = months_between(dx, ends[ep])
            if t < 0:
                raise RowError(f"{ep}_end_date", f"impossible date: {ends[ep]} is before the "
                                                 f"diagnosis date {dx}")
        if t is not None:
            rec.endpoints[ep] = (t, events.get(ep))
    for attr in ("_genes", "_vafs", "_times", "_events", "_ends", "_dx"):
        if hasattr(rec, attr):
            delattr(rec, attr)


def _read_variants(t: TextTable, records, rejected_ids, cat: Catalogue, m: HospitalMapping,
                   res: SourceResult) -> None:
    hn = [norm(h) for h in t.header]
    idx = {}
    for key, names in VARIANT_COLUMNS.items():
        for n in names:
            if n in hn:
                idx[key] = hn.index(n)
                break
    pid_names = {norm(s) for s in cat.fields["patient_id"].synonyms + ["patient_id"]}
    pid_i = next((i for i, h in enumerate(hn) if h in pid_names), None)
    if pid_i is None:
        raise EtlError("missing required column patient_id in the variant file", file=t.path, row=1)
    vaf_pct = False
    if "vaf" in idx:
        vals = []
        for raw in t.rows:
            if len(raw) == len(t.header):
                try:
                    v = parse_number(raw[idx["vaf"]], t.header[idx["vaf"]])[0]
                except RowError:
                    continue
                if v is not None:
                    vals.append(v)
        if hn[idx["vaf"]].endswith("percent") or (vals and 1 < max(vals) <= 100):
            vaf_pct = True
            res.conversions.append({"column": "vaf", "source_column": t.header[idx["vaf"]],
                                    "file": t.path, "from": "%", "to": "1", "factor": 0.01,
                                    "how": "inferred (values above 1)"})
    panel = m.gene_panel
    if panel is None:
        panel = [s for s in (cat.genes.resolve(f) for f in cat.schema.group("genomic")) if s]
        res.warnings.append(Issue(t.path, None, None, "no gene_panel in the mapping: genes of the "
                                  "schema without a listed variant are read as not mutated",
                                  None, "warning"))
    panel_syms = []
    for g in panel:
        s = cat.genes.resolve(g)
        if s is None:
            raise EtlError(f"unknown gene symbol {g!r} in the mapping's gene_panel", file=t.path)
        panel_syms.append(s)
    for pid, rec in records.items():
        rec.genes_studied = sorted(set(rec.genes_studied or []) | set(panel_syms))
    for raw, line in zip(t.rows, t.lines):
        pid = raw[pid_i].strip() if len(raw) > pid_i else ""
        if len(raw) != len(t.header):
            res.rejected.append(Issue(t.path, line, None, f"{len(raw)} fields, header has {len(t.header)}", pid or None))
            if pid in records:
                rejected_ids.add(pid)
            continue
        if pid not in records:
            if pid not in rejected_ids:
                res.dropped.append(Issue(t.path, line, t.header[pid_i], "stray row: patient not in the "
                                         "patient file", pid or None, "warning"))
            continue
        g = raw[idx["gene"]]
        sym = cat.genes.resolve(g)
        if sym is None:
            res.rejected.append(Issue(t.path, line, t.header[idx["gene"]], f"unknown gene symbol {g!r}", pid))
            res.raw_rows[(t.path, line)] = dict(zip(t.header, raw))
            rejected_ids.add(pid)
            continue
        try:
            vaf = parse_number(raw[idx["vaf"]], t.header[idx["vaf"]])[0] if "vaf" in idx else None
        except RowError as err:
            res.rejected.append(Issue(t.path, line, err.column, err.reason, pid))
            rejected_ids.add(pid)
            continue
        if vaf is not None and vaf_pct:
            vaf /= 100.0
        opt = lambda k: None if k not in idx or is_missing(raw[idx[k]]) else raw[idx[k]]  # noqa: E731
        records[pid].variants.append(Variant(sym, opt("hgvs_c"), opt("hgvs_p"), vaf, opt("variant_type")))
        if sym not in records[pid].genes_studied:
            records[pid].genes_studied = sorted(set(records[pid].genes_studied) | {sym})
