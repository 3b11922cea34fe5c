"""Generic hospital export: one CSV (or TSV...) per hospital, optionally more wide files joined
on the patient id and a long file of variants (one row per variant), read through synonyms for
column names, unit detection/conversion and an optional hospital mapping file."""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..catalogue import Catalogue, norm
from ..errors import EtlError, Issue, RowError
from ..hospital import HospitalMapping, load_mapping
from ..readers import TextTable, read_table
from ..records import (MISSING_TOKENS, PatientRecord, Variant, check_record, is_missing,
                       months_between, parse_binary, parse_code, parse_date, parse_number,
                       unit_factor)
from .common import SourceResult, dedupe_rows, file_info

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
    id, who, karyotype, gene, gene_vaf, vclass or embedding."""
    index: int
    header: str
    kind: str
    field: str
    unit: str | None = None
    unit_how: str = ""


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


def _bind_headers(t: TextTable, cat: Catalogue, m: HospitalMapping, syn) -> tuple[list[Col], list[str]]:
    cols: list[Col] = []
    unmapped: list[str] = []
    explicit = {v: k for k, v in m.columns.items()}
    genes = cat.genes
    for i, h in enumerate(t.header):
        if not h:
            continue
        if h in explicit:
            field = explicit[h]
            kind = _kind_of(cat, field)
            f = field
            if kind == "time":
                f = field[:-7]
            elif kind == "event":
                f = field[:-6]
            elif field.endswith("_end_date"):
                kind, f = "end_date", field[:-9]
            elif field in cat.fields and cat.fields[field].fhir == "variant.gene":
                kind = "gene"
            elif field in cat.fields and cat.fields[field].fhir == "variant.class":
                kind = "vclass"
            _, hunit = _split_unit(h)
            cols.append(Col(i, h, kind, f, hunit, "header" if hunit else ""))
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
        if hn in syn:
            kind, f = syn[hn]
            unit, how = hunit, "header" if hunit else ""
            if kind == "time" and not unit:  # os_years, os_days ...
                for u in sorted(cat.time_units, key=len, reverse=True):
                    if hn.endswith("_" + norm(u)):
                        unit, how = u, "header"
                        break
            cols.append(Col(i, h, kind, f, unit, how))
            continue
        # name + unit suffix: hb_g_l, plt_10_9_l, os_days
        hit = None
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
            cols.append(hit)
            continue
        # genes: TP53, mut_TP53, TP53_mut, TP53_vaf
        up = base.strip()
        cand, kind = up, "gene"
        low = up.lower()
        explicit_gene = False
        for pre in ("mut_", "mutation_", "gene_"):
            if low.startswith(pre):
                cand, explicit_gene = up[len(pre):], True
        for suf, k in (("_vaf", "gene_vaf"), ("_mut", "gene"), ("_mutation", "gene"), ("_status", "gene")):
            if low.endswith(suf):
                cand, kind, explicit_gene = up[: -len(suf)], k, True
        if cand in genes.derived_columns:
            unmapped.append(h)
            continue
        sym = genes.resolve(cand)
        if sym is not None and (explicit_gene or cand.isupper()):
            cols.append(Col(i, h, kind, sym, hunit if kind == "gene_vaf" else None,
                            "header" if hunit else ""))
            continue
        if explicit_gene:
            raise EtlError(f"unknown gene symbol {cand!r}", file=t.path, row=1, column=h)
        emb = [g for g in cat.schema.embeddings if g.matches(hn)]
        if emb:
            cols.append(Col(i, h, "embedding", hn))
            continue
        unmapped.append(h)
    for field, header in m.columns.items():
        if header not in t.header:
            raise EtlError(f"the mapping names column {header!r} for {field}, but the file has no "
                           f"such column", file=t.path, row=1, column=header)
    seen: dict[tuple[str, str], str] = {}
    for c in cols:
        key = (c.kind, c.field)
        if c.kind != "embedding" and key in seen:
            raise EtlError(f"columns {seen[key]!r} and {c.header!r} both map to "
                           f"{_field_target(c.kind, c.field)}; name one under 'columns' in a "
                           f"mapping file", file=t.path, row=1, column=c.header)
        seen[key] = c.header
    return cols, unmapped


def _is_variant_file(t: TextTable) -> bool:
    hn = {norm(h) for h in t.header}
    return bool(hn & set(VARIANT_COLUMNS["gene"]))


def read_generic(paths: list[Path], cat: Catalogue, mapping: str | Path | None) -> SourceResult:
    """Read hospital CSV export(s) into PatientRecords (schema units, times in months)."""
    m = load_mapping(mapping)
    if m.use_case and m.use_case.upper() != cat.use_case:
        raise EtlError(f"the mapping is for use case {m.use_case}, not {cat.use_case}", file=str(mapping))
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
        return _read_generic(files, cat, m, mapping, res)
    finally:
        MISSING_TOKENS.difference_update(added)


def _read_generic(files, cat: Catalogue, m: HospitalMapping, mapping, res: SourceResult) -> SourceResult:
    for field, codes in m.codes.items():
        spec = cat.fields.get(field)
        if spec is None:
            raise EtlError(f"mapping 'codes' names unknown field {field!r}", file=str(mapping))
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

    main = wide[0]
    bound = []
    for t in wide:
        cols, unmapped = _bind_headers(t, cat, m, syn)
        ids = [c for c in cols if c.kind == "id"]
        if not ids:
            raise EtlError("missing required column patient_id (accepted names: "
                           f"{', '.join(cat.fields['patient_id'].synonyms[:8])}, ...)", file=t.path, row=1)
        bound.append((t, cols, ids[0]))
        res.unmapped_columns += [f"{Path(t.path).name}:{h}" for h in unmapped]
        for c in cols:
            if c.kind not in ("id", "embedding"):
                res.column_mapping[_field_target(c.kind, c.field)] = f"{Path(t.path).name}:{c.header}"
    present = {(c.kind, c.field) for _, cols, _ in bound for c in cols}
    for name in cat.required_columns:
        f = cat.schema.feature(name)
        if ("feature", f.name) not in present:
            spec = cat.fields[f.name]
            raise EtlError(f"missing required column {f.name} (accepted names: "
                           f"{', '.join([f.name] + spec.synonyms[:6])})", file=main.path, row=1,
                           column=f.name)

    records: dict[str, PatientRecord] = {}
    raw_of: dict[tuple[str, int], dict] = {}
    rejected_ids: set[str] = set()
    for n, (t, cols, idc) in enumerate(bound):
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
        for pid, line, raw in keyed:
            if line in skip or pid in rejected_ids:
                continue
            rec = records.get(pid)
            if rec is None:
                rec = PatientRecord(patient_id=pid, source_file=t.path, source_row=line)
            try:
                _fill(rec, raw, t, cols, factors, cat, m)
            except RowError as err:
                res.rejected.append(Issue(t.path, line, err.column, err.reason, pid))
                res.raw_rows[(t.path, line)] = dict(zip(t.header, raw))
                rejected_ids.add(pid)
                records.pop(pid, None)
                continue
            records[pid] = rec
            if n == 0:
                raw_of[(t.path, line)] = dict(zip(t.header, raw))
    for t in long:
        _read_variants(t, records, rejected_ids, cat, m, res)
    for pid, rec in records.items():
        if pid in rejected_ids:
            continue
        try:
            _finish(rec, cat)
            check_record(rec, cat)
        except RowError as err:
            res.rejected.append(Issue(rec.source_file, rec.source_row, err.column, err.reason, pid))
            if (rec.source_file, rec.source_row) in raw_of:
                res.raw_rows[(rec.source_file, rec.source_row)] = raw_of[(rec.source_file, rec.source_row)]
            continue
        res.records.append(rec)
    return res


def _column_factors(t: TextTable, cols: list[Col], cat: Catalogue, m: HospitalMapping,
                    res: SourceResult) -> dict[int, float]:
    """Per numeric column, the factor to the schema unit: mapping > header > inferred > schema."""
    factors: dict[int, float] = {}
    for c in cols:
        if c.kind == "time":
            units, target, typical = cat.time_units, "mo", cat.time_typical
            declared = m.units.get(f"{c.field}_months")
        elif c.kind in ("feature", "gene_vaf"):
            if c.kind == "gene_vaf":
                units, target = cat.fields["tp53_maxvaf"].units, "1"
                typical = None
                declared = m.units.get(f"{c.field}_vaf")
            else:
                f = cat.schema.feature(c.field)
                if f.kind != "numeric":
                    continue
                spec = cat.fields[c.field]
                units, target, typical = spec.units, f.unit, spec.typical
                declared = m.units.get(c.field)
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


def _convert(v: float, cell_unit: str | None, col: Col, cat: Catalogue, factor: float,
             res_units: dict[str, float]) -> float:
    if cell_unit is None:
        return v * factor
    f = unit_factor(res_units, cell_unit)
    if f is None:
        raise RowError(col.header, f"unknown unit {cell_unit!r} in the cell")
    return v * f


def _fill(rec: PatientRecord, raw: tuple, t: TextTable, cols: list[Col], factors, cat: Catalogue,
          m: HospitalMapping) -> None:
    genes_seen = getattr(rec, "_genes", {})
    vafs = getattr(rec, "_vafs", {})
    emb: dict[str, dict[int, float | None]] = {}
    for c in cols:
        tok = raw[c.index]
        if c.kind == "id":
            continue
        if c.kind == "who":
            if cat.who_class_column and c.field == cat.who_class_column:
                spec = cat.fields.get(c.field)
                val = parse_code(tok, c.header, spec) if spec and spec.codes else (None if is_missing(tok) else tok)
                rec.who_class = val
            else:
                rec.who_class = None if is_missing(tok) else tok
        elif c.kind == "karyotype":
            rec.karyotype = None if is_missing(tok) else tok
        elif c.kind == "feature":
            f = cat.schema.feature(c.field)
            spec = cat.fields[c.field]
            if f.kind == "numeric":
                v, cu, _ = parse_number(tok, c.header)
                if v is not None:
                    rec.values[c.field] = _convert(v, cu, c, cat, factors.get(c.index, 1.0), spec.units)
                elif c.field not in rec.values:
                    rec.values[c.field] = None
            elif f.kind == "binary":
                v = parse_binary(tok, c.header, cat.binary_codes)
                if v is not None or c.field not in rec.values:
                    rec.values[c.field] = v
            else:
                v = parse_code(tok, c.header, spec)
                if v is not None or c.field not in rec.values:
                    rec.values[c.field] = v
        elif c.kind == "gene":
            genes_seen[c.field] = parse_binary(tok, c.header, cat.binary_codes)
        elif c.kind == "vclass":
            genes_seen[c.field] = parse_binary(tok, c.header, cat.binary_codes)
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
            rec._events[c.field] = parse_binary(tok, c.header, cat.event_codes)
        elif c.kind == "end_date":
            rec._ends = getattr(rec, "_ends", {})
            rec._ends[c.field] = parse_date(tok, c.header, m.date_format)
        elif c.kind == "dx_date":
            rec._dx = parse_date(tok, c.header, m.date_format)
        elif c.kind == "embedding":
            prefix, _, k = c.field.rpartition("_")
            v, _, _ = parse_number(tok, c.header)
            emb.setdefault(prefix, {})[int(k)] = v
    for prefix, vals in emb.items():
        known = [v for v in vals.values() if v is not None]
        if not known:
            continue
        if len(known) != len(vals):
            missing = [f"{prefix}_{k}" for k, v in vals.items() if v is None][0]
            raise RowError(missing, f"incomplete {prefix} feature vector (missing cells)")
        rec.embeddings[prefix] = [vals[k] for k in sorted(vals)]
    rec._genes = genes_seen
    rec._vafs = vafs


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
