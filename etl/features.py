"""FHIR R4 Bundles -> one ML-ready row per patient in the schema of ``fedhaem_kernel.schema``.

Table layout: ``patient_id``; every schema feature in schema order (numeric and binary as
float64 with NaN for missing, categorical as strings); per endpoint ``<name>_months`` (time from
diagnosis, months) and ``<name>_event`` (1 event, 0 censored); embedding blocks
``<prefix>_0..`` when present.
"""
from __future__ import annotations


import pandas as pd

from .catalogue import LOCAL_SYSTEM, Catalogue, split_code
from .fhir import (LOINC, LOINC_CHANGE_TYPE, LOINC_GENE, LOINC_REGION, LOINC_VAF,
                   LOINC_VARIANT, PATIENT_ID_SYSTEM, WHO_SYSTEM)
from .records import unit_factor


class _Index:
    def __init__(self, cat: Catalogue):
        self.obs: dict[tuple[str, str], str] = {}
        self.therapy: dict[tuple[str, str], str] = {}
        for f in cat.schema.features:
            spec = cat.fields.get(f.name)
            if spec is None or not spec.code:
                continue
            key = split_code(spec.code)
            if spec.fhir == "observation":
                self.obs[key] = f.name
            elif spec.fhir in ("medication", "procedure"):
                self.therapy[key] = f.name


def _codings(cc: dict | None) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c.get("code", "")) for c in (cc or {}).get("coding", [])]


def _components(obs: dict) -> dict[tuple[str, str], dict]:
    out = {}
    for comp in obs.get("component") or []:
        for key in _codings(comp.get("code")):
            out[key] = comp
    return out


def _quantity(q: dict, field: str, cat: Catalogue, conversions: list) -> float:
    value = float(q["value"])
    f = cat.schema.feature(field)
    unit = q.get("code") or q.get("unit") or ""
    if not unit or unit == f.unit:
        return value
    spec = cat.fields[field]
    factor = unit_factor(spec.units, unit)
    if factor is None:
        raise ValueError(f"{field}: unit {unit!r} not convertible to {f.unit}")
    conversions.append((field, unit, f.unit, factor))
    return value * factor


def bundle_to_row(bundle: dict, cat: Catalogue, conversions: list | None = None) -> dict:
    """One patient Bundle -> {column: value} in schema units (see module docstring)."""
    conversions = [] if conversions is None else conversions
    idx = _index(cat)
    schema = cat.schema
    row: dict = {}
    karyo: dict[str, bool] = {}
    studied: set[str] | None = None
    variants: list[tuple[str, float | None, str | None]] = []
    for ent in bundle.get("entry") or []:
        res = ent.get("resource") or {}
        rt = res.get("resourceType")
        if rt == "Patient":
            for ident in res.get("identifier") or []:
                if ident.get("system") == PATIENT_ID_SYSTEM:
                    row[schema.id_column] = ident.get("value")
            if schema.id_column not in row and res.get("identifier"):
                row[schema.id_column] = res["identifier"][0].get("value")
            g = res.get("gender")
            if g in ("male", "female"):
                row["sex"] = "M" if g == "male" else "F"
        elif rt == "Condition":
            if "onsetAge" in res:
                q = res["onsetAge"]
                v = float(q["value"])
                row["age"] = v / 12.0 if q.get("code") == "mo" else v
            for sys, code in _codings(res.get("code")):
                if sys == WHO_SYSTEM and cat.who_class_column:
                    row[cat.who_class_column] = code
        elif rt in ("MedicationStatement", "Procedure"):
            cc = res.get("medicationCodeableConcept") if rt == "MedicationStatement" else res.get("code")
            for key in _codings(cc):
                if key in idx.therapy:
                    st = res.get("status")
                    if st in ("completed", "active", "stopped", "on-hold"):
                        row[idx.therapy[key]] = 1.0
                    elif st in ("not-taken", "not-done"):
                        row[idx.therapy[key]] = 0.0
        elif rt == "Observation":
            codes = _codings(res.get("code"))
            if (LOINC, LOINC_VARIANT) in codes:
                comps = _components(res)
                gene = _codings(comps.get((LOINC, LOINC_GENE), {}).get("valueCodeableConcept"))
                if not gene:
                    continue
                vaf_c = comps.get((LOINC, LOINC_VAF))
                vaf = float(vaf_c["valueQuantity"]["value"]) if vaf_c and "valueQuantity" in vaf_c else None
                if vaf is not None and (vaf_c["valueQuantity"].get("code") == "%"):
                    vaf /= 100.0
                vt = _codings(comps.get((LOINC, LOINC_CHANGE_TYPE), {}).get("valueCodeableConcept"))
                sym = cat.genes.resolve(gene[0][1]) or gene[0][1]
                variants.append((sym, vaf, vt[0][1] if vt else None))
                continue
            if (LOINC, LOINC_REGION) in codes:
                studied = studied or set()
                for comp in res.get("component") or []:
                    for sys, code in _codings(comp.get("valueCodeableConcept")):
                        studied.add(cat.genes.resolve(code) or code)
                continue
            for sys, code in codes:
                if (sys, code) in idx.obs:
                    name = idx.obs[(sys, code)]
                    f = schema.feature(name)
                    if "valueQuantity" in res:
                        row[name] = _quantity(res["valueQuantity"], name, cat, conversions)
                    elif "valueBoolean" in res:
                        row[name] = 1.0 if res["valueBoolean"] else 0.0
                    elif "valueCodeableConcept" in res:
                        cc = res["valueCodeableConcept"]
                        c = (cc.get("coding") or [{}])[0]
                        val = c.get("display") or c.get("code", "").partition(":")[2] or cc.get("text")
                        row[name] = val
                    break
                if sys != LOCAL_SYSTEM:
                    continue
                if code == "not-tested":  # the hospital's declaration (etl.fhir.build_bundle)
                    row["_not_tested"] = sorted(c2 for comp in res.get("component") or []
                                                for s2, c2 in _codings(comp.get("code"))
                                                if s2 == LOCAL_SYSTEM and "dataAbsentReason" in comp)
                elif code == "karyotype":
                    for comp in res.get("component") or []:
                        for s2, c2 in _codings(comp.get("code")):
                            if s2 == LOCAL_SYSTEM and "valueBoolean" in comp:
                                karyo[c2] = bool(comp["valueBoolean"])
                elif code.startswith("endpoint-"):
                    ep = code[len("endpoint-"):]
                    if ep in cat.endpoints and "valueQuantity" in res:
                        q = res["valueQuantity"]
                        t = float(q["value"])
                        unit = q.get("code", "mo")
                        if unit != "mo":
                            factor = cat.time_units.get(unit)
                            if factor is None:
                                raise ValueError(f"endpoint {ep}: time unit {unit!r} unknown")
                            conversions.append((f"{ep}_months", unit, "mo", factor))
                            t *= factor
                        row[f"{ep}_months"] = t
                        for comp in res.get("component") or []:
                            if (LOCAL_SYSTEM, "event-observed") in _codings(comp.get("code")):
                                row[f"{ep}_event"] = 1.0 if comp.get("valueBoolean") else 0.0
                elif code.startswith("embedding-"):
                    prefix = code[len("embedding-"):]
                    data = (res.get("valueSampledData") or {}).get("data", "")
                    for i, tok in enumerate(data.split()):
                        row[f"{prefix}_{i}"] = float(tok)
    for f in schema.features:
        spec = cat.fields.get(f.name)
        if spec is None:
            continue
        if spec.fhir == "karyotype.component" and f.name in karyo:
            row[f.name] = 1.0 if karyo[f.name] else 0.0
        elif spec.fhir == "variant.gene":
            sym = cat.genes.resolve(f.name) or f.name
            if any(v[0] == sym for v in variants):
                row[f.name] = 1.0
            elif studied is not None and sym in studied:
                row[f.name] = 0.0
        elif spec.fhir == "variant.class":
            gene, vtype = cat.genes.variant_classes[f.name]
            if any(v[0] == gene and v[2] == vtype for v in variants):
                row[f.name] = 1.0
            elif studied is not None and gene in studied:
                row[f.name] = 0.0
        elif spec.fhir == "variant.tp53_count":
            tp = [v for v in variants if v[0] == "TP53"]
            if tp or (studied is not None and "TP53" in studied):
                row[f.name] = float(len(tp))
        elif spec.fhir == "variant.tp53_maxvaf":
            tp = [v for v in variants if v[0] == "TP53"]
            vafs = [v[1] for v in tp if v[1] is not None]
            if vafs:
                row[f.name] = max(vafs)
            elif not tp and studied is not None and "TP53" in studied:
                row[f.name] = 0.0
    return row


_INDEX_CACHE: dict[int, _Index] = {}


def _index(cat: Catalogue) -> _Index:
    key = id(cat)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = _Index(cat)
    return _INDEX_CACHE[key]


def table_columns(cat: Catalogue, extra: list[str] = ()) -> list[str]:
    """Column order of the ML-ready table for a use case (extra = embedding columns found)."""
    schema = cat.schema
    cols = [schema.id_column] + schema.feature_names
    for e in schema.endpoints:
        cols += [e.time_column, e.event_column]
    return cols + list(extra)


def rows_to_table(rows: list[dict], cat: Catalogue) -> pd.DataFrame:
    """Rows from ``bundle_to_row`` -> DataFrame in the schema's column order and dtypes."""
    schema = cat.schema
    emb_cols: list[str] = []
    seen = set()
    for r in rows:
        for k in r:
            if k not in seen and any(g.matches(k) for g in schema.embeddings):
                seen.add(k)
    for g in schema.embeddings:
        mine = sorted((c for c in seen if g.matches(c)), key=lambda c: int(c.rpartition("_")[2]))
        emb_cols += mine
    cols = table_columns(cat, emb_cols)
    data = {c: [r.get(c) for r in rows] for c in cols}
    df = pd.DataFrame(data, columns=cols)
    for f in schema.features:
        if f.kind == "categorical":
            df[f.name] = df[f.name].astype(object).where(df[f.name].notna(), None)
        else:
            df[f.name] = pd.to_numeric(df[f.name], errors="raise").astype("float64")
    for c in cols:
        if c.endswith("_months") or c.endswith("_event") or c in seen:
            df[c] = pd.to_numeric(df[c]).astype("float64")
    df[schema.id_column] = df[schema.id_column].astype(str)
    return df.sort_values(schema.id_column, kind="stable").reset_index(drop=True)
