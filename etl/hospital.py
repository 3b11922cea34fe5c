"""A hospital's mapping file (YAML or JSON) for the generic CSV reader (docs/etl-mapping.md).

Example (YAML)::

    use_case: AML
    delimiter: ";"            # optional, detected otherwise
    encoding: cp1252          # optional, detected otherwise (UTF-8, UTF-16 BOM, Windows-1252)
    date_format: "%d.%m.%Y"   # optional, ISO 8601 and day-first forms otherwise
    missing_values: ["n.b."]  # added to the built-in missing tokens
    fields:
      sex: {column: Geschlecht, codes: {"0": F, "1": M}}     # closed list of source values
      hb: {column: Hb, unit: detect}                          # g/dL or g/L chosen per row
      IDH2: {any_of: [IDH2_R140, IDH2_R172]}                  # OR of several columns
      t_9_22: {constant: not_tested}                          # never tested: missing, not 0
      transplant: {constant: 0}                               # declared for every patient
      anc: {compute: 'col("WBC") * col("Neutro %") / 100'}
      os_months: {column: OS_days, unit: d}
    ignore: [Karnofsky, MRD_status]                           # read as nothing
    extra: {protocol: Study_arm}                              # outside the schema, carried
    # the first format, still read: columns, units, codes (added to the built-in codes),
    # synonyms, gene_panel
    columns: {plt: Thrombos}
    units: {plt: /uL}
    codes: {sex: {M: [männlich], F: [weiblich]}}
    synonyms: {plt: [thrombos]}
    gene_panel: [TP53, ASXL1, ...]   # genes sequenced when variants come as a long file

The file is checked against ``etl.mapping_schema.MAPPING_SCHEMA`` (errors name the line and
key), then against the use case: a field the schema does not have is refused with the list of
known fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .catalogue import Catalogue, norm_token
from .errors import EtlError
from .mapping_schema import format_path, line_map, line_of, validate
from .records import unit_factor

NOT_TESTED = "not_tested"
_NOT_TESTED_SPELLINGS = {"not_tested", "not tested", "untested", "not-tested"}
_NULLS = {None, "", "null", "~", "none", "missing"}


def _scalar(v) -> str | None:
    """A code target or constant as the BaseLoader would read it: a string, or None."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, str) and v.strip().lower() in _NULLS:
        return None
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class FieldRule(BaseModel):
    """How one schema field is read: exactly one of column, any_of, all_of, constant, compute."""
    model_config = ConfigDict(extra="forbid")

    column: str | None = None
    any_of: list[str] | None = None
    all_of: list[str] | None = None
    constant: str | None = None
    compute: str | None = None
    codes: dict[str, str | None] | None = None
    unit: str | None = None
    detect: list[str] | None = None  # from unit: {detect: [...]} or unit: detect
    note: str | None = None
    has_constant: bool = False

    @property
    def kind(self) -> str:
        for k in ("column", "any_of", "all_of", "compute"):
            if getattr(self, k) is not None:
                return k
        return "constant"

    @property
    def not_tested(self) -> bool:
        return self.has_constant and (self.constant or "").strip().lower() in _NOT_TESTED_SPELLINGS

    def source_columns(self) -> list[str]:
        if self.column is not None:
            return [self.column]
        return list(self.any_of or self.all_of or [])

    def code_lookup(self) -> dict[str, str | None] | None:
        if self.codes is None:
            return None
        return {norm_token(k): v for k, v in self.codes.items()}


class HospitalMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = None
    use_case: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    date_format: str | None = None
    missing_values: list[str] = []
    fields: dict[str, FieldRule] = {}
    ignore: list[str] = []
    extra: dict[str, dict] = {}
    columns: dict[str, str] = {}
    units: dict[str, str] = {}
    codes: dict[str, dict[str, list[str]]] = {}
    synonyms: dict[str, list[str]] = {}
    gene_panel: list[str] | None = None
    # not part of the file: where it came from, for error messages
    source: str | None = None
    lines: dict = {}

    @field_validator("delimiter")
    @classmethod
    def _delim(cls, v):
        if v is None:
            return v
        v = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(v, v)
        if len(v) != 1:
            raise ValueError("delimiter must be one character (or tab, comma, semicolon, pipe)")
        return v

    def error(self, path, message: str) -> EtlError:
        """An EtlError naming this file, the line of `path` and the key."""
        line = line_of(self.lines, path)
        where = (f"line {line}, " if line else "") + format_path(path)
        return EtlError(f"{where}: {message}", file=self.source)

    def rules(self) -> dict[str, FieldRule]:
        """Every field rule, the first format's ``columns``/``units`` included."""
        out = dict(self.fields)
        for f, col in self.columns.items():
            if f not in out:
                out[f] = FieldRule(column=col, unit=self.units.get(f))
        return out


def _normalise(data: dict) -> dict:
    """Shorthands to their long form: 'Col' -> {column: 'Col'}, unit: detect -> detect: []."""
    data = dict(data)
    if "version" in data and data["version"] is not None:
        data["version"] = str(data["version"])
    fields = {}
    for name, rule in (data.get("fields") or {}).items():
        r = {"column": rule} if isinstance(rule, str) else dict(rule)
        if "constant" in r:
            r["has_constant"] = True
            r["constant"] = _scalar(r["constant"])
        if "codes" in r:
            r["codes"] = {str(k): _scalar(v) for k, v in (r["codes"] or {}).items()}
        unit = r.get("unit")
        if isinstance(unit, dict):
            r["detect"] = list(unit["detect"])
            r["unit"] = None
        elif isinstance(unit, str) and unit.strip().lower() == "detect":
            r["detect"] = []  # the field's detectable units (features.yaml)
            r["unit"] = None
        fields[name] = r
    data["fields"] = fields
    data["extra"] = {k: ({"column": v} if isinstance(v, str) else dict(v))
                     for k, v in (data.get("extra") or {}).items()}
    return data


def load_mapping(path: str | Path | None) -> HospitalMapping:
    """Read and validate a mapping file; errors name the file, the line and the key."""
    if path is None:
        return HospitalMapping()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EtlError(f"cannot read mapping file: {e}", file=str(p)) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=yaml.BaseLoader)
    except ValueError as e:
        raise EtlError(f"mapping file is not valid JSON: {e}", file=str(p)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise EtlError(f"{where}mapping file is not valid YAML: {getattr(e, 'problem', e)}",
                       file=str(p)) from None
    data = data if data is not None else {}
    lines = line_map(text)
    problems = validate(data)
    if problems:
        path_, msg = problems[0]
        line = line_of(lines, path_)
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise EtlError(f"invalid mapping: {'line ' + str(line) + ', ' if line else ''}"
                       f"{format_path(path_)}: {msg}{more}", file=str(p))
    try:
        m = HospitalMapping.model_validate(_normalise(data))
    except ValidationError as e:
        err = e.errors()[0]
        loc = [x for x in err["loc"]]
        line = line_of(lines, loc)
        raise EtlError(f"invalid mapping: {'line ' + str(line) + ', ' if line else ''}"
                       f"{format_path(loc)}: {err['msg']}", file=str(p)) from None
    m.source, m.lines = str(p), lines
    return m


# --- checks against the use case ------------------------------------------------------------

@dataclass
class FieldInfo:
    """What a mapping may name: a schema feature, the id, an endpoint column or a date."""
    name: str
    kind: str          # feature, id, time, event, end_date, dx_date, who, karyotype
    value_kind: str    # numeric, binary, categorical, text, date
    categories: tuple = ()
    required: bool = False
    units: dict = field(default_factory=dict)
    detect: list = field(default_factory=list)


def known_fields(cat: Catalogue) -> dict[str, FieldInfo]:
    """Every name a mapping may bind for this use case."""
    out = {"patient_id": FieldInfo("patient_id", "id", "text", required=True)}
    for f in cat.schema.features:
        spec = cat.fields.get(f.name)
        kind = "who" if f.name == cat.who_class_column else "feature"
        cats = f.categories if f.kind == "categorical" else ()
        out[f.name] = FieldInfo(f.name, kind, f.kind, cats, f.required,
                                dict(spec.units) if spec else {}, list(spec.detect) if spec else [])
    if not cat.who_class_column:
        out["who_class"] = FieldInfo("who_class", "who", "text")
    out["karyotype"] = FieldInfo("karyotype", "karyotype", "text")
    for ep in cat.endpoints:
        out[f"{ep}_months"] = FieldInfo(f"{ep}_months", "time", "numeric", required=True,
                                        units=dict(cat.time_units))
        out[f"{ep}_event"] = FieldInfo(f"{ep}_event", "event", "binary", required=True)
        out[f"{ep}_end_date"] = FieldInfo(f"{ep}_end_date", "end_date", "date", required=True)
    out["diagnosis_date"] = FieldInfo("diagnosis_date", "dx_date", "date", required=True)
    return out


def _unknown_field(m: HospitalMapping, cat: Catalogue, path, name: str) -> EtlError:
    known = known_fields(cat)
    close = [k for k in known if k.lower() == name.lower()]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return m.error(path, f"{cat.use_case} has no field {name!r}{hint}. Known fields: "
                         f"{', '.join(known)}. A column to keep outside the schema goes under "
                         f"'extra:', one to skip under 'ignore:'")


def check_mapping(m: HospitalMapping, cat: Catalogue) -> None:
    """Refuse (EtlError, line and key named) what the use case cannot take."""
    if m.use_case and m.use_case.upper() != cat.use_case:
        raise m.error(["use_case"], f"the mapping is for use case {m.use_case.upper()}, not {cat.use_case}")
    known = known_fields(cat)
    for section in ("columns", "units", "codes", "synonyms"):
        for name in getattr(m, section):
            if name not in known:
                raise _unknown_field(m, cat, [section, name], name)
    for name, unit in m.units.items():
        _check_unit(m, known[name], unit, [ "units", name])
    for name, rule in m.fields.items():
        path = ["fields", name]
        if name not in known:
            raise _unknown_field(m, cat, path, name)
        info = known[name]
        if rule.codes is not None:
            if info.value_kind not in ("binary", "categorical"):
                raise m.error(path + ["codes"], f"{name} is {info.value_kind}: codes are for yes/no "
                                                f"and categorical fields")
            allowed = _allowed_values(info)
            for tok, v in rule.codes.items():
                if v is not None and v not in allowed:
                    raise m.error(path + ["codes", tok], f"{v!r} is not a value of {name}; expected "
                                                         f"{', '.join(allowed)} or null (missing)")
        if rule.unit is not None:
            _check_unit(m, info, rule.unit, path + ["unit"])
        if rule.detect is not None:
            if info.value_kind != "numeric":
                raise m.error(path + ["unit"], f"{name} is not numeric: no unit to detect")
            cands = rule.detect or info.detect
            if len(cands) < 2:
                raise m.error(path + ["unit"], f"{name} has no built-in units to detect per row; list "
                                               f"them: unit: {{detect: [unit, unit]}} (accepted: "
                                               f"{', '.join(info.units)})")
            for u in cands:
                _check_unit(m, info, u, path + ["unit", "detect"])
            rule.detect = list(cands)
        kind = rule.kind
        if kind in ("compute", "constant", "any_of", "all_of") and info.kind not in ("feature", "who"):
            if kind == "constant" and info.kind in ("id", "time", "event", "end_date", "dx_date"):
                raise m.error(path + ["constant"], f"{name} cannot be a constant (it differs per patient)")
            raise m.error(path + [kind], f"{kind} is for the schema's features; {name} is read from "
                                         f"a column")
        if kind in ("any_of", "all_of") and info.value_kind != "binary":
            raise m.error(path + [kind], f"{kind} combines yes/no columns; {name} is {info.value_kind}")
        if kind == "compute" and info.value_kind != "numeric":
            raise m.error(path + ["compute"], f"compute gives a number; {name} is {info.value_kind}")
        if kind == "compute":
            from .compute import parse_expression  # small; kept apart to test on its own
            try:
                parse_expression(rule.compute)
            except ValueError as e:
                raise m.error(path + ["compute"], str(e)) from None
        if kind == "constant":
            if info.kind in ("id", "time", "event", "end_date", "dx_date"):
                raise m.error(path + ["constant"], f"{name} cannot be a constant (it differs per patient)")
            if not rule.not_tested and rule.constant is not None:
                _check_constant(m, info, rule.constant, path + ["constant"])
    seen: dict[str, str] = {}
    for name, rule in m.rules().items():
        for col in rule.source_columns():
            if col in m.ignore:
                raise m.error(["ignore"], f"column {col!r} is both ignored and read for {name}")
            if rule.kind == "column" and col in seen and seen[col] != name:
                raise m.error(["fields", name], f"column {col!r} is already read for {seen[col]}")
            seen.setdefault(col, name)
    for name in m.extra:
        if name in known:
            raise m.error(["extra", name], f"{name} is a field of the {cat.use_case} schema; "
                                           f"bind it under 'fields:' instead")


def _allowed_values(info: FieldInfo) -> list[str]:
    if info.value_kind == "binary":
        return ["0", "1"]
    return list(info.categories)


def _check_unit(m, info: FieldInfo, unit: str, path) -> None:
    if info.value_kind != "numeric":
        raise m.error(path, f"{info.name} is {info.value_kind}: it has no unit")
    if info.units and unit_factor(info.units, unit) is None:
        raise m.error(path, f"unit {unit!r} is not accepted for {info.name} (accepted: "
                            f"{', '.join(info.units)})")


def _check_constant(m, info: FieldInfo, value: str, path) -> None:
    if info.value_kind == "numeric":
        try:
            float(value)
        except ValueError:
            raise m.error(path, f"{info.name} is numeric: constant {value!r} is not a number "
                                f"(or write not_tested)") from None
    elif value not in _allowed_values(info) and info.value_kind != "text":
        raise m.error(path, f"{value!r} is not a value of {info.name}; expected "
                            f"{', '.join(_allowed_values(info))} or not_tested")
