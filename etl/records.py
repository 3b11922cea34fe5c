"""The canonical per-patient record every source is turned into before FHIR, and the cell
parsers and plausibility checks shared by all sources."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime

from .catalogue import Catalogue, FieldSpec, norm_token
from .errors import RowError

MISSING_TOKENS = {"", "na", "n/a", "nan", "none", "null", ".", "-", "--", "?", "missing", "unknown",
                  "unk", "nd", "n.d.", "not done", "#n/a", "not available", "k.a.", "nk"}


@dataclass
class Variant:
    """One genomic finding: approved gene symbol, HGVS c./p., VAF as a fraction (0..1)."""
    gene: str
    hgvs_c: str | None = None
    hgvs_p: str | None = None
    vaf: float | None = None
    variant_type: str | None = None  # Sub, Del, Ins, PTD, ITD, Complex ... (source vocabulary)


@dataclass
class PatientRecord:
    """One patient in schema units: numbers in the schema unit, binary 0/1, categories canonical.

    ``values`` holds clinical, cytogenetic, therapy and other observed columns; gene flags and
    TP53 count/max VAF are not stored there but derived from ``variants`` and ``genes_studied``.
    ``endpoints`` maps an endpoint name to (time in months, event 1/0 or None).
    """
    patient_id: str
    values: dict[str, object] = field(default_factory=dict)
    who_class: str | None = None
    karyotype: str | None = None
    variants: list[Variant] = field(default_factory=list)
    genes_studied: list[str] | None = None
    endpoints: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    embeddings: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # fields outside the schema (mapping 'extra')
    source_file: str = ""
    source_row: int | None = None


def is_missing(token) -> bool:
    if token is None:
        return True
    if isinstance(token, float) and math.isnan(token):
        return True
    return str(token).strip().lower() in MISSING_TOKENS


_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NUM_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_NUM_UNIT = re.compile(r"^([+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?)\s*([^\d\s].*)$")


def parse_number(token, column: str) -> tuple[float | None, str | None, bool]:
    """Cell -> (value, unit written in the cell or None, decimal comma used)."""
    if is_missing(token):
        return None, None, False
    if isinstance(token, (int, float)):
        return float(token), None, False
    s = str(token).strip().replace("\u00a0", "").replace("\u2009", "")
    s = re.sub(r"(?<=\d) (?=\d{3}\b)", "", s)  # "150 000"
    if _NUM.match(s):
        return float(s), None, False
    if _NUM_COMMA.match(s):
        return float(s.replace(",", ".")), None, True
    m = _NUM_UNIT.match(s)
    if m:
        num = m.group(1)
        comma = "," in num
        return float(num.replace(",", ".")), m.group(2).strip(), comma
    raise RowError(column, f"unparseable number {str(token)!r}")


def unit_factor(spec_units: dict[str, float], unit: str) -> float | None:
    """Factor for a unit spelled in a header or cell; None when the unit is not accepted."""
    key = _unit_key(unit)
    for u, f in spec_units.items():
        if _unit_key(u) == key:
            return f
    return None


def _unit_key(u: str) -> str:
    s = str(u).strip().replace("µ", "u").replace("μ", "u").replace("^", "*").replace("×", "x")
    s = s.replace(" ", "").lower()
    s = re.sub(r"^x(?=10)", "", s).replace("e9", "*9").replace("e3", "*3").replace("e6", "*6")
    s = s.replace("cells/", "/").replace("mm3", "ul").replace("mm*3", "ul")
    return s


def parse_binary(token, column: str, codes: dict[str, int]) -> int | None:
    if token == "0" or token == "1":
        return 1 if token == "1" else 0
    if is_missing(token):
        return None
    if isinstance(token, (int, float)):
        if token in (0, 1):
            return int(token)
        raise RowError(column, f"impossible value {token!r} for a yes/no column (expected 0 or 1)")
    key = norm_token(token)
    if key in codes:
        return codes[key]
    raise RowError(column, f"unknown value {str(token)!r} for a yes/no column (expected 0/1, yes/no)")


def parse_code(token, column: str, spec: FieldSpec) -> str | None:
    if is_missing(token):
        return None
    look = spec.code_lookup()
    key = norm_token(token)
    if key in look:
        return look[key]
    raise RowError(column, f"unknown value {str(token)!r}; expected one of {', '.join(spec.codes)}")


_DATE_FORMATS = ["%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y%m%d",
                 "%Y-%m-%dT%H:%M:%S", "%d.%m.%y"]


def parse_date(token, column: str, fmt: str | None = None) -> date | None:
    """Dates: the mapping's format, else ISO 8601 then day-first European forms."""
    if is_missing(token):
        return None
    s = str(token).strip()
    for f in ([fmt] if fmt else _DATE_FORMATS):
        try:
            return datetime.strptime(s, f).date()
        except ValueError:
            continue
    want = f" (expected {fmt})" if fmt else ""
    raise RowError(column, f"unparseable date {s!r}{want}")


def months_between(start: date, end: date) -> float:
    """Calendar difference in months (days / 30.4375, i.e. Julian year / 12)."""
    return (end - start).days / 30.4375


def check_record(rec: PatientRecord, cat: Catalogue) -> list[tuple[str, str, object]]:
    """Values outside the schema's range become missing: returns them as (column, reason, value).

    Raises RowError only for what makes the patient unusable: a required value missing or
    impossible, an impossible survival time or event."""
    schema = cat.schema
    quarantined: list[tuple[str, str, object]] = []
    for f in schema.features:
        if f.group == "genomic" and f.name not in ("tp53_loh",):
            continue
        v = rec.values.get(f.name)
        if v is None:
            if f.required:
                raise RowError(f.name, f"missing required value {f.name}")
            continue
        reason = None
        if f.kind in ("numeric", "binary"):
            x = float(v)
            if math.isnan(x) or math.isinf(x):
                reason = f"impossible value {v!r}"
            elif (f.minimum is not None and x < f.minimum) or (f.maximum is not None and x > f.maximum):
                unit = f" {f.unit}" if f.unit else ""
                reason = (f"impossible value {x:g}{unit}: outside "
                          f"[{f.minimum:g}, {f.maximum:g}]{unit}")
        elif f.kind == "categorical" and f.categories and v not in f.categories:
            reason = f"unknown category {v!r}; expected one of {', '.join(f.categories)}"
        if reason:
            if f.required:
                raise RowError(f.name, reason)
            rec.values[f.name] = None
            quarantined.append((f.name, reason, v))
    for name, (t, e) in rec.endpoints.items():
        if t is None or math.isnan(t) or t < 0:
            raise RowError(f"{name}_months", f"impossible time {t!r} months (negative or missing)")
        if t > 1200:
            raise RowError(f"{name}_months", f"impossible time {t:g} months (over 100 years)")
        if e not in (0, 1, None):
            raise RowError(f"{name}_event", f"impossible event value {e!r} (expected 0 or 1)")
    for v in rec.variants:
        if v.vaf is not None and not (0.0 <= v.vaf <= 1.0):
            quarantined.append(("vaf", f"impossible VAF {v.vaf:g} for {v.gene} (expected a "
                                       f"fraction 0..1)", v.vaf))
            v.vaf = None
    return quarantined
