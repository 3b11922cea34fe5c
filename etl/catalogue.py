"""The declarative mappings shipped in ``etl/mappings``: field catalogue, use cases, genes.

Loaded with PyYAML's BaseLoader (every scalar is a string) so "yes", "no", "1" stay literal
tokens; numbers are converted here.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from fedhaem_kernel.schema import UseCaseSchema, get_schema

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
LOCAL_SYSTEM = "urn:fedhaem:code"
SYSTEMS = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "atc": "http://www.whocc.no/atc",
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "local": LOCAL_SYSTEM,
}


def load_yaml(path: Path) -> dict:
    """Read a YAML (or JSON, a YAML subset) file with every scalar as a string."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=yaml.BaseLoader)
    return data or {}


@lru_cache(maxsize=200_000)
def norm(name: str) -> str:
    """Normalise a column name or token: no accents, lower case, non-alphanumerics -> '_'."""
    s = unicodedata.normalize("NFKD", str(name))
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("µ", "u").replace("μ", "u").lower()
    s = re.sub(r"[^a-z0-9+\-]+", "_", s).strip("_")
    return s


@lru_cache(maxsize=200_000)
def norm_token(value: str) -> str:
    """Normalise a cell token for code look-up (case, accents, surrounding blanks)."""
    return norm(value).replace("_", " ").strip()


def split_code(code: str) -> tuple[str, str]:
    """'loinc|718-7' -> ('http://loinc.org', '718-7')."""
    sys_key, _, c = code.partition("|")
    return SYSTEMS[sys_key], c


@dataclass
class FieldSpec:
    """How one table column (or auxiliary field) is recognised and carried in FHIR."""
    name: str
    fhir: str = ""
    code: str = ""
    display: str = ""
    synonyms: list[str] = field(default_factory=list)
    units: dict[str, float] = field(default_factory=dict)  # source unit -> factor to schema unit
    typical: tuple[float, float] | None = None
    codes: dict[str, list[str]] = field(default_factory=dict)  # canonical -> tokens
    detect: list[str] = field(default_factory=list)  # units told apart per row by the value
    # categorical value -> (system, code, display) of a standard concept, carried as a second
    # coding beside the local one (SCD genotypes -> SNOMED CT disorders)
    value_codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def code_lookup(self) -> dict[str, str]:
        key = repr(self.codes)  # cached; recomputed when a hospital mapping adds codes
        cached = getattr(self, "_lookup", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        out = {}
        for canon, toks in self.codes.items():
            out[norm_token(canon)] = canon
            for t in toks:
                out[norm_token(t)] = canon
        self._lookup = (key, out)
        return out


@dataclass
class Catalogue:
    """Field catalogue for one use case: its schema plus the FHIR/source rules per column."""
    schema: UseCaseSchema
    fields: dict[str, FieldSpec]
    diagnosis: tuple[str, str, str]  # system, code, display
    endpoints: dict[str, dict]
    time_units: dict[str, float]
    time_typical: tuple[float, float]
    binary_codes: dict[str, int]
    event_codes: dict[str, int]
    diagnosis_date_synonyms: list[str]
    who_class_column: str | None
    genes: "GeneTable"
    required_columns: list[str] = field(default_factory=list)  # schema features a file must have

    @property
    def use_case(self) -> str:
        return self.schema.use_case


@dataclass
class GeneTable:
    approved: set[str]
    aliases: dict[str, str]
    variant_classes: dict[str, tuple[str, str]]  # column -> (gene, variant type)
    derived_columns: set[str]

    def resolve(self, symbol: str) -> str | None:
        """Approved HGNC symbol for a symbol or alias (case-insensitive), None if unknown."""
        s = str(symbol).strip()
        if s in self.approved:
            return s
        u = s.upper()
        for cand in (u, s):
            if cand in self.aliases:
                return self.aliases[cand]
        upper_map = {a.upper(): a for a in self.approved}
        return upper_map.get(u)


def _num(v: str) -> float:
    """'0.1' or an exact ratio such as '12/365.25'."""
    s = str(v)
    if "/" in s:
        a, b = s.split("/")
        return float(a) / float(b)
    return float(s)


def _floats(d: dict) -> dict[str, float]:
    return {str(k): _num(v) for k, v in (d or {}).items()}


def _int_codes(d: dict) -> dict[str, int]:
    out = {}
    for k, toks in d.items():
        for t in toks:
            out[norm_token(t)] = int(k)
    return out


def _value_code(text: str) -> tuple[str, str, str]:
    """'snomed|127040003|Sickle cell anemia' -> (system URL, code, display)."""
    sys_key, code, display = (str(text).split("|", 2) + ["", ""])[:3]
    if sys_key not in SYSTEMS or not code:
        raise ValueError(f"features.yaml: value code {text!r} is not '<system>|<code>|<display>'")
    return SYSTEMS[sys_key], code, display


@lru_cache(maxsize=1)
def gene_table() -> GeneTable:
    g = load_yaml(MAPPINGS_DIR / "genes.yaml")
    return GeneTable(
        approved=set(g["approved"]),
        aliases={k.upper(): v for k, v in g.get("aliases", {}).items()},
        variant_classes={k: (v["gene"], v["variant_type"]) for k, v in g.get("variant_classes", {}).items()},
        derived_columns=set(g.get("derived_columns", [])),
    )


@lru_cache(maxsize=8)
def catalogue(use_case: str) -> Catalogue:
    """The merged catalogue (features.yaml + <use case>.yaml) for MDS, AML, CMML, MM or SCD."""
    schema = get_schema(use_case)
    base = load_yaml(MAPPINGS_DIR / "features.yaml")
    uc = load_yaml(MAPPINGS_DIR / f"{schema.use_case.lower()}.yaml")
    genes = gene_table()
    fields: dict[str, FieldSpec] = {}
    for name, spec in base["fields"].items():
        typical = spec.get("typical")
        fields[name] = FieldSpec(
            name=name, fhir=spec.get("fhir", ""), code=spec.get("code", ""),
            display=spec.get("display", ""), synonyms=list(spec.get("synonyms", [])),
            units=_floats(spec.get("units", {})),
            typical=(float(typical[0]), float(typical[1])) if typical else None,
            codes={k: list(v) for k, v in spec.get("codes", {}).items()},
            detect=list(spec.get("detect", [])),
            value_codes={k: _value_code(v) for k, v in (spec.get("value_codes") or {}).items()},
        )
    for name, syns in base.get("cytogenetic_synonyms", {}).items():
        fields[name] = FieldSpec(name=name, fhir="karyotype.component", code=f"local|{name}",
                                 synonyms=list(syns))
    # Gene columns and variant-class columns of this schema
    for f in schema.features:
        if f.group == "genomic" and f.name not in fields:
            if f.name in genes.variant_classes:
                fields[f.name] = FieldSpec(name=f.name, fhir="variant.class",
                                           synonyms=[f.name, f.name.lower()])
            else:
                fields[f.name] = FieldSpec(name=f.name, fhir="variant.gene",
                                           synonyms=[f.name, f"{f.name}_mut", f"mut_{f.name}"])
    # A use case may carry a field differently (SCD: age at baseline is an Observation, not the
    # Condition's onset age): fhir, code and display only.
    for name, over in (uc.get("fields") or {}).items():
        if name not in fields:
            raise ValueError(f"{schema.use_case.lower()}.yaml: fields.{name}: not in features.yaml")
        for key in ("fhir", "code", "display"):
            if key in over:
                setattr(fields[name], key, over[key])
    for name, syns in (uc.get("synonyms") or {}).items():
        if name in fields:
            fields[name].synonyms.extend(syns)
    for name, codes in (uc.get("codes") or {}).items():
        fields.setdefault(name, FieldSpec(name=name))
        fields[name].codes = {k: list(v) for k, v in codes.items()}
    who_col = uc.get("who_class_column")
    for f in schema.features:
        if f.name not in fields and f.name != who_col:
            raise ValueError(f"features.yaml has no entry for {schema.use_case} column {f.name!r}")
        if f.name in fields and not fields[f.name].display:
            fields[f.name].display = f.description
    dsys, dcode = split_code(uc["diagnosis"]["code"])
    tt = base["time_typical"]
    return Catalogue(
        schema=schema, fields=fields,
        diagnosis=(dsys, dcode, uc["diagnosis"]["display"]),
        endpoints={e.name: base["endpoints"][e.name] for e in schema.endpoints},
        time_units=_floats(base["time_units"]),
        time_typical=(float(tt[0]), float(tt[1])),
        binary_codes=_int_codes(base["binary_codes"]),
        event_codes=_int_codes(base["event_codes"]),
        diagnosis_date_synonyms=list(base.get("diagnosis_date_synonyms", [])),
        who_class_column=who_col,
        genes=genes,
        required_columns=sorted(set(uc.get("required_columns", []))
                                | {f.name for f in schema.features if f.required}),
    )
