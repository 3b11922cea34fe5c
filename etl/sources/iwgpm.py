"""The IWG-PM layout (df_clinical.tsv, df_mut.tsv, df_cna.tsv, maf.tsv; see mappings/iwgpm.yaml).

Times in the source are years; the table's ``*_months`` are years x 12.
"""
from __future__ import annotations

from pathlib import Path

from ..catalogue import MAPPINGS_DIR, Catalogue, gene_table, load_yaml
from ..errors import EtlError, Issue, RowError
from ..readers import read_table
from ..records import (PatientRecord, Variant, check_record, is_missing, parse_binary, parse_code,
                       parse_number)
from .common import SourceResult, dedupe_rows, file_info


def layout() -> dict:
    return load_yaml(MAPPINGS_DIR / "iwgpm.yaml")


def find_files(paths: list[Path]) -> dict[str, Path] | None:
    """Map role -> file when the paths are an IWG-PM folder or its files; None otherwise."""
    spec = layout()["files"]
    names = {v: k for k, v in spec.items()}
    found: dict[str, Path] = {}
    for p in paths:
        if p.is_dir():
            for fname, role in names.items():
                if (p / fname).exists():
                    found[role] = p / fname
        elif p.name in names:
            found[names[p.name]] = p
    return found if "clinical" in found else None


def _col(table, name: str, required: bool, what: str) -> int | None:
    if name in table.header:
        return table.header.index(name)
    if required:
        raise EtlError(f"missing required column {name!r} ({what})", file=table.path, row=1)
    return None


def read_iwgpm(files: dict[str, Path], cat: Catalogue) -> SourceResult:
    """Read the IWG-PM files into PatientRecords (values in schema units, times in months)."""
    lay = layout()
    if lay["use_case"] != cat.use_case:
        raise EtlError(f"the IWG-PM layout is a {lay['use_case']} cohort, not {cat.use_case}",
                       file=str(files["clinical"]))
    res = SourceResult(layout="iwgpm")
    idc = lay["id_column"]
    clin = read_table(files["clinical"], delimiter="\t")
    res.files.append(file_info(files["clinical"], clin))
    for line, reason in clin.dropped:
        res.dropped.append(Issue(clin.path, line, None, reason, None, "warning"))
    id_i = _col(clin, idc, True, "patient identifier")
    required = set(cat.required_columns)
    cols: dict[str, int | None] = {}
    for field, src in lay["clinical_columns"].items():
        cols[field] = _col(clin, src, field in required, f"schema column {field}")
        if cols[field] is not None:
            res.column_mapping[field] = f"{Path(clin.path).name}:{src}"
    cx_i = _col(clin, lay["complex_column"], False, "complex karyotype")
    c17_i = _col(clin, lay["chr17_column"], False, "chr17 status")
    ep_cols = {}
    for ep, spec in lay["endpoints"].items():
        if ep in cat.endpoints:
            ep_cols[ep] = (_col(clin, spec["time"], False, f"{ep} time"),
                           _col(clin, spec["event"], False, f"{ep} event"),
                           cat.time_units[spec["unit"]])
            res.column_mapping[f"{ep}_months"] = f"{Path(clin.path).name}:{spec['time']}"
            res.column_mapping[f"{ep}_event"] = f"{Path(clin.path).name}:{spec['event']}"
            res.conversions.append({"column": f"{ep}_months", "source_column": spec["time"],
                                    "from": spec["unit"], "to": "mo",
                                    "factor": cat.time_units[spec["unit"]], "how": "declared"})
    used = {i for i in list(cols.values()) + [id_i, cx_i, c17_i] if i is not None}
    used |= {i for t in ep_cols.values() for i in t[:2] if i is not None}
    res.unmapped_columns = [h for i, h in enumerate(clin.header) if i not in used]
    cyto_codes = lay["cyto_ipssr_codes"]
    complex_codes = {k: int(v) for k, v in lay["complex_codes"].items()}
    loh_codes = set(lay["chr17_loh"])

    keyed = []
    for raw, line in zip(clin.rows, clin.lines):
        pid = raw[id_i].strip() if len(raw) > id_i else ""
        if len(raw) != len(clin.header):
            res.rejected.append(Issue(clin.path, line, None, f"{len(raw)} fields, header has "
                                      f"{len(clin.header)} (wrong delimiter or stray text)", pid or None))
            continue
        if not pid:
            res.dropped.append(Issue(clin.path, line, idc, "stray row: no patient id", None, "warning"))
            continue
        if all(is_missing(c) for i, c in enumerate(raw) if i != id_i):
            res.dropped.append(Issue(clin.path, line, None, f"stray row: no data besides the id {pid!r}",
                                     None, "warning"))
            continue
        keyed.append((pid, line, tuple(raw)))
    res.n_input_rows = len(clin.rows) + len(clin.dropped)
    res.input_patient_ids = sorted({k[0] for k in keyed} | {i.patient_id for i in res.rejected if i.patient_id})
    skip, _ = dedupe_rows(keyed, clin.path, res)

    records: dict[str, PatientRecord] = {}
    for pid, line, raw in keyed:
        if line in skip:
            continue
        rec = PatientRecord(patient_id=pid, source_file=clin.path, source_row=line)
        try:
            for field, i in cols.items():
                if i is None:
                    continue
                tok = raw[i]
                col = clin.header[i]
                try:
                    _read_field(rec, field, tok, col, cat, cyto_codes)
                except RowError as err:  # a value, not the patient: set missing and quarantined
                    if field in cat.schema.feature_names and cat.schema.feature(field).required:
                        raise
                    rec.values[field] = None
                    res.quarantined.append(Issue(clin.path, line, err.column, err.reason, pid,
                                                 "quarantined", tok))
            if cx_i is not None and not is_missing(raw[cx_i]):
                if raw[cx_i] not in complex_codes:
                    res.quarantined.append(Issue(clin.path, line, clin.header[cx_i],
                                                 f"unknown value {raw[cx_i]!r}; expected "
                                                 f"{' or '.join(complex_codes)}", pid, "quarantined",
                                                 raw[cx_i]))
                else:
                    rec.values["complex"] = complex_codes[raw[cx_i]]
            if c17_i is not None and not is_missing(raw[c17_i]):
                rec.values["tp53_loh"] = 1 if raw[c17_i].strip() in loh_codes else 0
            for ep, (ti, ei, factor) in ep_cols.items():
                if ti is None:
                    continue
                t, _, _ = parse_number(raw[ti], clin.header[ti])
                if t is None:
                    continue
                e = parse_binary(raw[ei], clin.header[ei], cat.event_codes) if ei is not None else None
                rec.endpoints[ep] = (t * factor, e)
        except RowError as err:
            res.rejected.append(Issue(clin.path, line, err.column, err.reason, pid))
            res.raw_rows[(clin.path, line)] = dict(zip(clin.header, raw))
            continue
        records[pid] = rec

    bad: dict[str, Issue] = {}
    if "mutations" in files:
        _read_mut(files["mutations"], records, cat, res, bad, idc)
    if "cna" in files:
        _read_cna(files["cna"], records, cat, res, bad, idc, lay["cna"])
    if "maf" in files:
        _read_maf(files["maf"], records, cat, res, bad, idc, lay["maf_columns"])
    for pid, rec in records.items():
        if pid in bad:
            res.rejected.append(bad[pid])
            continue
        _complete_variants(rec)
        try:
            for col, reason, value in check_record(rec, cat):
                res.quarantined.append(Issue(rec.source_file, rec.source_row, col, reason, pid,
                                             "quarantined", str(value)))
        except RowError as err:
            res.rejected.append(Issue(rec.source_file, rec.source_row, err.column, err.reason, pid))
            continue
        res.records.append(rec)
    return res


def _read_field(rec: PatientRecord, field: str, tok: str, col: str, cat, cyto_codes: dict) -> None:
    """One clinical cell of the IWG-PM layout into `rec` (RowError when it cannot be read)."""
    if field == "who_class":
        rec.who_class = None if is_missing(tok) else tok.strip()
    elif field == "karyotype":
        rec.karyotype = None if is_missing(tok) else tok.strip()
    elif field == "sex":
        rec.values["sex"] = parse_code(tok, col, cat.fields["sex"])
    elif field == "cyto_ipssr":
        if not is_missing(tok):
            if tok.strip() not in cyto_codes:
                raise RowError(col, f"unknown value {tok!r}; expected one of {', '.join(cyto_codes)}")
            rec.values["cyto_ipssr"] = cyto_codes[tok.strip()]
    elif cat.schema.feature(field).kind == "binary":
        rec.values[field] = parse_binary(tok, col, cat.binary_codes)
    else:
        v, unit, _ = parse_number(tok, col)
        if unit is not None:
            raise RowError(col, f"unexpected unit {unit!r} in a number column")
        rec.values[field] = v


def _ids_rows(table, idc, records, res, bad, what):
    id_i = _col(table, idc, True, "patient identifier")
    for raw, line in zip(table.rows, table.lines):
        pid = raw[id_i].strip() if len(raw) > id_i else ""
        if len(raw) != len(table.header):
            if pid in records:
                bad.setdefault(pid, Issue(table.path, line, None, f"{len(raw)} fields, header has "
                                          f"{len(table.header)}", pid))
            continue
        if pid not in records:
            res.dropped.append(Issue(table.path, line, idc, f"stray row: patient not in the clinical "
                                     f"file ({what})", pid or None, "warning"))
            continue
        yield pid, line, raw


def _read_mut(path, records, cat, res, bad, idc):
    t = read_table(path, delimiter="\t")
    res.files.append(file_info(path, t))
    genes = cat.genes
    gene_cols = {}
    for i, h in enumerate(t.header):
        if h == idc or h in genes.derived_columns:
            continue
        if h in genes.variant_classes:
            gene_cols[i] = ("class", h)
            continue
        sym = genes.resolve(h)
        if sym is None:
            raise EtlError(f"unknown gene symbol {h!r} in the header", file=t.path, row=1, column=h)
        gene_cols[i] = ("gene", sym)
    studied = sorted({v for k, v in gene_cols.values() if k == "gene"})
    for f in cat.schema.group("genomic"):
        if f in t.header:
            res.column_mapping[f] = f"{Path(t.path).name}:{f}"
    for pid, line, raw in _ids_rows(t, idc, records, res, bad, "mutations"):
        rec = records[pid]
        rec.genes_studied = list(studied)
        flags = {}
        try:
            for i, (kind, name) in gene_cols.items():
                v = parse_binary(raw[i], t.header[i], cat.binary_codes)
                if v:
                    flags[(kind, name)] = 1
        except RowError as err:
            bad.setdefault(pid, Issue(t.path, line, err.column, err.reason, pid))
            continue
        rec._flags = flags  # resolved against maf rows in _complete_variants


def _read_cna(path, records, cat, res, bad, idc, cna_map):
    t = read_table(path, delimiter="\t")
    res.files.append(file_info(path, t))
    idx = {}
    for field, srcs in cna_map.items():
        if field not in cat.schema.feature_names:
            continue
        present = [t.header.index(s) for s in srcs if s in t.header]
        if present:
            idx[field] = present
            res.column_mapping[field] = f"{Path(t.path).name}:{'|'.join(srcs)}"
    for pid, line, raw in _ids_rows(t, idc, records, res, bad, "copy-number"):
        try:
            for field, cols in idx.items():
                vals = [parse_binary(raw[i], t.header[i], cat.binary_codes) for i in cols]
                known = [v for v in vals if v is not None]
                records[pid].values[field] = (1 if any(known) else 0) if known else None
        except RowError as err:
            bad.setdefault(pid, Issue(t.path, line, err.column, err.reason, pid))


def _read_maf(path, records, cat, res, bad, idc, mc):
    t = read_table(path, delimiter="\t")
    res.files.append(file_info(path, t))
    gi = _col(t, mc["gene"], True, "gene symbol")
    ci = _col(t, mc["hgvs_c"], False, "cDNA change")
    pi = _col(t, mc["hgvs_p"], False, "protein change")
    vi = _col(t, mc["vaf"], False, "variant allele fraction")
    ti = _col(t, mc["variant_type"], False, "variant type")
    for pid, line, raw in _ids_rows(t, idc, records, res, bad, "variants"):
        sym = cat.genes.resolve(raw[gi])
        if sym is None:
            bad.setdefault(pid, Issue(t.path, line, t.header[gi], f"unknown gene symbol {raw[gi]!r}", pid))
            continue
        try:
            vaf = parse_number(raw[vi], t.header[vi])[0] if vi is not None else None
        except RowError as err:
            bad.setdefault(pid, Issue(t.path, line, err.column, err.reason, pid))
            continue
        opt = lambda i: None if i is None or is_missing(raw[i]) else raw[i].strip()  # noqa: E731
        records[pid].variants.append(Variant(sym, opt(ci), opt(pi), vaf, opt(ti)))


def _complete_variants(rec: PatientRecord) -> None:
    """Add gene-only variants for matrix flags that have no detailed variant row."""
    flags = getattr(rec, "_flags", None)
    if not flags:
        return
    classes = gene_table().variant_classes
    for kind, name in flags:
        if kind == "gene":
            if not any(v.gene == name for v in rec.variants):
                rec.variants.append(Variant(name))
        else:
            gene, vtype = classes[name]
            if not any(v.gene == gene and v.variant_type == vtype for v in rec.variants):
                rec.variants.append(Variant(gene, variant_type=vtype))
    del rec._flags
