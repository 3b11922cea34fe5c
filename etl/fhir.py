"""Canonical patient records -> FHIR R4 Bundles (one ``collection`` Bundle per patient), and
their validation with fhir.resources.

fhir.resources >= 7 ships R5 by default plus the R4B and STU3 packages; R4B (4.3.0) is the
R4-compatible release and the resources used here (Patient, Condition, Observation,
MedicationStatement, Procedure, Bundle) have the same structure in R4 and R4B, so bundles are
validated with ``fhir.resources.R4B``.

Genomic findings follow the HL7 Genomics Reporting IG pattern (STU2/3, R4): one "variant"
Observation (LOINC 69548-6, value LA9633-4 Present) per variant with components gene studied
(48018-6), DNA change c.HGVS (48004-6), amino-acid change p.HGVS (48005-3), sample VAF
(81258-6) and DNA change type (48019-4); one "region studied" Observation (53041-0) lists the
genes sequenced, so a gene studied without a variant reads back as 0 and a gene not studied
as missing. Gene codes are HGNC approved symbols under a local system (the HGNC numeric IDs
are not shipped offline).
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid
from functools import lru_cache
from typing import Iterable

from fedhaem_kernel.atrest import KeyProvider, text_reader, text_writer

from .catalogue import LOCAL_SYSTEM, Catalogue, split_code
from .errors import Issue
from .records import PatientRecord

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PATIENT_ID_SYSTEM = "urn:fedhaem:patient-id"
GENE_SYSTEM = "urn:fedhaem:code:hgnc-symbol"
WHO_SYSTEM = "urn:fedhaem:code:who-class"
VARIANT_TYPE_SYSTEM = "urn:fedhaem:code:variant-type"
HGVS = "http://varnomen.hgvs.org"
USE_CASE_TAG = "urn:fedhaem:use-case"
VARIANT_PROFILE = "http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/variant"
REGION_PROFILE = "http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/region-studied"
_NS = uuid.UUID("6f1c1d2e-3b4a-5c6d-8e9f-0a1b2c3d4e5f")

DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
LOINC_VARIANT = "69548-6"
LOINC_REGION = "53041-0"
LOINC_GENE = "48018-6"
LOINC_CHGVS = "48004-6"
LOINC_PHGVS = "48005-3"
LOINC_VAF = "81258-6"
LOINC_CHANGE_TYPE = "48019-4"
PRESENT = {"system": LOINC, "code": "LA9633-4", "display": "Present"}


_NS_BYTES = _NS.bytes


def _uid(*parts: str) -> str:
    """Deterministic UUID version 5 (RFC 4122, SHA-1) of the parts: reruns give the same ids."""
    b = bytearray(hashlib.sha1(_NS_BYTES + "|".join(parts).encode("utf-8")).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _cc(system: str, code: str, display: str = "") -> dict:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return {"coding": [c]}


def _local(code: str, display: str = "") -> dict:
    return _cc(LOCAL_SYSTEM, code, display)


def _qty(value: float, unit: str) -> dict:
    return {"value": float(value), "unit": unit, "system": UCUM, "code": unit}


def _category(code: str) -> list[dict]:
    return [{"coding": [{"system": OBS_CATEGORY, "code": code}]}]


@lru_cache(maxsize=64)
def _panel_components(genes: tuple[str, ...]) -> list[dict]:
    # One shared list per panel: patients sequenced on the same panel carry the same list.
    return [{"code": _cc(LOINC, LOINC_GENE), "valueCodeableConcept": _cc(GENE_SYSTEM, g)}
            for g in genes]


def build_bundle(rec: PatientRecord, cat: Catalogue, not_tested: Iterable[str] = ()) -> dict:
    """One patient -> FHIR R4 ``collection`` Bundle (plain JSON dict). not_tested: the fields the
    hospital declares never tested, carried as one Observation (local code ``not-tested``) with a
    component per field whose dataAbsentReason is ``not-performed``, so a table built again from
    the bundles keeps the declaration."""
    pid = rec.patient_id
    p_uuid = _uid(cat.use_case, pid, "Patient")
    subject = {"reference": f"urn:uuid:{p_uuid}"}
    entries: list[dict] = []

    def add(resource: dict, key: str) -> None:
        rid = _uid(cat.use_case, pid, key)
        resource["id"] = rid
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource})

    patient = {"resourceType": "Patient", "id": p_uuid,
               "identifier": [{"system": PATIENT_ID_SYSTEM, "value": pid}]}
    sex = rec.values.get("sex")
    if sex is not None:
        patient["gender"] = {"M": "male", "F": "female"}[sex]
    if "os" in rec.endpoints and rec.endpoints["os"][1] is not None:
        patient["deceasedBoolean"] = bool(rec.endpoints["os"][1])
    entries.append({"fullUrl": f"urn:uuid:{p_uuid}", "resource": patient})

    dsys, dcode, ddisp = cat.diagnosis
    code = _cc(dsys, dcode, ddisp)
    who = rec.who_class or (rec.values.get(cat.who_class_column) if cat.who_class_column else None)
    if who:
        code["coding"].append({"system": WHO_SYSTEM, "code": str(who)})
    cond = {"resourceType": "Condition", "subject": subject, "code": code,
            "verificationStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                      "confirmed")}
    age_spec = cat.fields.get("age")
    if rec.values.get("age") is not None and (age_spec is None or age_spec.fhir == "condition.onset_age"):
        cond["onsetAge"] = _qty(rec.values["age"], "a")
    add(cond, "Condition")

    karyo_components = []
    for f in cat.schema.features:
        v = rec.values.get(f.name)
        spec = cat.fields.get(f.name)
        if v is None or spec is None:
            continue
        kind = spec.fhir
        if kind == "observation":
            sys, c = split_code(spec.code)
            obs = {"resourceType": "Observation", "status": "final",
                   "category": _category("laboratory"), "code": _cc(sys, c, spec.display),
                   "subject": subject}
            if f.kind == "numeric":
                obs["valueQuantity"] = _qty(v, f.unit or "1")
            elif f.kind == "binary":
                obs["valueBoolean"] = bool(v)
            else:
                obs["valueCodeableConcept"] = _local(f"{f.name}:{v}", str(v))
                if v in spec.value_codes:  # the standard concept beside the local code
                    vsys, vcode, vdisp = spec.value_codes[v]
                    obs["valueCodeableConcept"]["coding"].append(
                        {"system": vsys, "code": vcode, **({"display": vdisp} if vdisp else {})})
            add(obs, f"obs:{f.name}")
        elif kind == "karyotype.component":
            karyo_components.append({"code": _local(f.name, f.description), "valueBoolean": bool(v)})
        elif kind in ("medication", "procedure"):
            sys, c = split_code(spec.code)
            if kind == "medication":
                res = {"resourceType": "MedicationStatement",
                       "status": "completed" if v else "not-taken",
                       "medicationCodeableConcept": _cc(sys, c, spec.display), "subject": subject}
            else:
                res = {"resourceType": "Procedure", "status": "completed" if v else "not-done",
                       "code": _cc(sys, c, f.description), "subject": subject}
            add(res, f"therapy:{f.name}")
        elif kind == "condition.who_class" or f.name == cat.who_class_column:
            continue  # carried on Condition.code
    if rec.karyotype or karyo_components:
        obs = {"resourceType": "Observation", "status": "final", "category": _category("laboratory"),
               "code": _local("karyotype", "Karyotype (ISCN) and cytogenetic findings"),
               "subject": subject}
        if rec.karyotype:
            obs["valueString"] = rec.karyotype
        if karyo_components:
            obs["component"] = karyo_components
        add(obs, "karyotype")

    if rec.genes_studied is not None:
        add({"resourceType": "Observation", "status": "final", "meta": {"profile": [REGION_PROFILE]},
             "category": _category("laboratory"),
             "code": _cc(LOINC, LOINC_REGION, "DNA region of interest panel"), "subject": subject,
             "component": _panel_components(tuple(sorted(rec.genes_studied)))}, "region-studied")
    for i, var in enumerate(rec.variants):
        comps = [{"code": _cc(LOINC, LOINC_GENE, "Gene studied [ID]"),
                  "valueCodeableConcept": _cc(GENE_SYSTEM, var.gene)}]
        if var.hgvs_c:
            comps.append({"code": _cc(LOINC, LOINC_CHGVS, "DNA change (c.HGVS)"),
                          "valueCodeableConcept": _cc(HGVS, var.hgvs_c)})
        if var.hgvs_p:
            comps.append({"code": _cc(LOINC, LOINC_PHGVS, "Amino acid change (pHGVS)"),
                          "valueCodeableConcept": _cc(HGVS, var.hgvs_p)})
        if var.vaf is not None:
            comps.append({"code": _cc(LOINC, LOINC_VAF, "Sample variant allelic frequency [NFr]"),
                          "valueQuantity": _qty(var.vaf, "1")})
        if var.variant_type:
            comps.append({"code": _cc(LOINC, LOINC_CHANGE_TYPE, "DNA change type"),
                          "valueCodeableConcept": _cc(VARIANT_TYPE_SYSTEM, var.variant_type)})
        add({"resourceType": "Observation", "status": "final", "meta": {"profile": [VARIANT_PROFILE]},
             "category": _category("laboratory"),
             "code": _cc(LOINC, LOINC_VARIANT, "Genetic variant assessment"), "subject": subject,
             "valueCodeableConcept": {"coding": [PRESENT]}, "component": comps}, f"variant:{i}")

    for name, (t, e) in rec.endpoints.items():
        obs = {"resourceType": "Observation", "status": "final", "category": _category("survey"),
               "code": _local(f"endpoint-{name}", cat.endpoints[name]["display"]),
               "subject": subject, "valueQuantity": _qty(t, "mo")}
        if e is not None:
            obs["component"] = [{"code": _local("event-observed", "Event observed (1) or censored (0)"),
                                 "valueBoolean": bool(e)}]
        add(obs, f"endpoint:{name}")
    declared = sorted(not_tested)
    if declared:
        add({"resourceType": "Observation", "status": "final", "category": _category("laboratory"),
             "code": _local("not-tested", "Fields the hospital declares never tested"), "subject": subject,
             "component": [{"code": _local(f, cat.fields[f].display if f in cat.fields else f),
                            "dataAbsentReason": _cc(DATA_ABSENT, "not-performed", "Not Performed")}
                           for f in declared]}, "not-tested")
    for name, value in sorted(rec.extra.items()):
        # A field outside the schema (mapping 'extra'): carried as text under a local code; the
        # table never reads it back (its columns are the schema's), extra.csv holds it too.
        add({"resourceType": "Observation", "status": "final",
             "code": _local(f"extra-{name}", f"{name} (outside the {cat.use_case} schema)"),
             "subject": subject, "valueString": str(value)}, f"extra:{name}")
    for prefix, vec in rec.embeddings.items():
        add({"resourceType": "Observation", "status": "final", "category": _category("imaging"),
             "code": _local(f"embedding-{prefix}", f"Feature vector ({prefix})"), "subject": subject,
             "valueSampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1,
                                  "data": " ".join(repr(float(x)) for x in vec)}}, f"embedding:{prefix}")
    return {"resourceType": "Bundle", "id": _uid(cat.use_case, pid, "Bundle"), "type": "collection",
            "meta": {"tag": [{"system": USE_CASE_TAG, "code": cat.use_case}]}, "entry": entries}


# Required bindings fhir.resources does not enforce (it checks structure and types only).
_STATUS = {
    "Observation": {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                    "entered-in-error", "unknown"},
    "MedicationStatement": {"active", "completed", "entered-in-error", "intended", "stopped",
                            "on-hold", "unknown", "not-taken"},
    "Procedure": {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                  "entered-in-error", "unknown"},
}
_GENDER = {"male", "female", "other", "unknown"}
_BUNDLE_TYPES = {"document", "message", "transaction", "transaction-response", "batch",
                 "batch-response", "history", "searchset", "collection"}


_SEEN: dict[str, None] = {}  # resources already validated, keyed by content without ids
_COMP_KEYS: dict[int, tuple] = {}
_STR = r"'[^'\\\s]+(?: [^'\\\s]+)*'(?=[,}])"
_VALUE_TOKEN = re.compile(r"('(?:value|code|valueString)': )(?:(-?[0-9][0-9.e+-]*)|" + _STR + ")(?=[,}])")


def _mask_one(m: re.Match) -> str:
    # numbers and strings get different marks: a string where a decimal belongs must not
    # share a key with a number; numbers only under "value" (decimals), never under "code"
    if m.group(2) is not None:
        return m.group(1) + "#" if m.group(1) == "'value': " else m.group(0)
    return m.group(1) + "$"


def _mask(text: str) -> str:
    return _VALUE_TOKEN.sub(_mask_one, text)


def _shape_key(res: dict) -> str:
    # Identical content apart from the patient's ids validates identically; the panel
    # ("region studied") Observation, for one, repeats unchanged for every patient.
    # Validation is memoised per shape. In the key, a finite number under "value" (a FHIR
    # decimal: Quantity.value) and a string under "value", "code" or "valueString" that has no
    # leading, trailing or double blanks (so it matches the FHIR code regex, stricter than
    # string's) are masked: fhir.resources accepts every such value alike, so one validation
    # stands for all of them. Anything else (other keys, odd strings) is validated as is.
    d = {k: v for k, v in res.items() if k not in ("id", "subject", "component")}
    comp = res.get("component")
    if comp is None:
        return _mask(repr(d))
    ck = _COMP_KEYS.get(id(comp))
    if ck is None or ck[0] is not comp:
        ck = (comp, _mask(repr(comp)))
        if len(comp) > 16:  # large shared lists (gene panels) are keyed once
            _COMP_KEYS[id(comp)] = ck
    return _mask(repr(d)) + ck[1]


def validate_bundle(bundle: dict, where: str = "") -> list[str]:
    """Validate one Bundle (dict) against FHIR R4(B) with fhir.resources; [] when valid."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    problems: list[str] = []

    def _errors(e: ValidationError, prefix: str) -> None:
        for err in e.errors()[:5]:
            loc = ".".join(str(x) for x in err["loc"])
            problems.append(f"{where}{prefix}{loc}: {err['msg']}")

    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        return [f"{where}entry: not a list"]
    envelope = dict(bundle)
    envelope["entry"] = [{k: v for k, v in ent.items() if k != "resource"} if isinstance(ent, dict)
                         else ent for ent in entries]
    try:
        Bundle.model_validate(envelope)
    except ValidationError as e:
        _errors(e, "")
        return problems
    if bundle.get("type") not in _BUNDLE_TYPES:
        problems.append(f"{where}type: {bundle.get('type')!r} is not a Bundle type")
    for i, ent in enumerate(entries):
        res = ent.get("resource")
        if not isinstance(res, dict):
            continue
        rt = res.get("resourceType")
        key = _shape_key(res)
        if key not in _SEEN:
            try:
                cls = get_fhir_model_class(str(rt))
            except Exception:
                problems.append(f"{where}entry.{i}.resource.resourceType: unknown {rt!r}")
                continue
            try:
                cls.model_validate(res)
            except ValidationError as e:
                _errors(e, f"entry.{i}.resource.")
                continue
            if len(_SEEN) > 50000:
                _SEEN.clear()
            _SEEN[key] = None
        if rt in _STATUS and res.get("status") not in _STATUS[rt]:
            problems.append(f"{where}entry.{i}.resource.status: {res.get('status')!r} is not a "
                            f"{rt} status")
        if rt == "Patient" and "gender" in res and res["gender"] not in _GENDER:
            problems.append(f"{where}entry.{i}.resource.gender: {res['gender']!r} is not a gender code")
    return problems


def write_ndjson(bundles: Iterable[dict], path, keys: KeyProvider | None = None) -> int:
    """Write Bundles one per line (newline-delimited JSON), encrypted at rest with ``keys``;
    returns the count."""
    n = 0
    with text_writer(path, keys) as fh:
        for b in bundles:
            fh.write(json.dumps(b, separators=(",", ":"), ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def read_ndjson(path, keys: KeyProvider | None = None) -> Iterable[tuple[int, dict | None, Issue | None]]:
    """Yield (line, bundle, issue) from a newline-delimited JSON file of Bundles (or one Bundle),
    decrypted with ``keys`` when it is encrypted at rest."""
    name = str(path)
    with text_reader(path, keys, encoding="utf-8-sig") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" not in stripped.strip():
        chunks = [(1, stripped)]
    else:
        chunks = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    for line, chunk in chunks:
        try:
            obj = json.loads(chunk)
        except json.JSONDecodeError as e:
            yield line, None, Issue(name, line, None, f"not JSON: {e.msg}")
            continue
        if obj.get("resourceType") != "Bundle":
            yield line, None, Issue(name, line, None, f"expected a Bundle, got {obj.get('resourceType')!r}")
            continue
        yield line, obj, None
