"""A hospital's own column-mapping file (YAML or JSON) for the generic CSV reader.

Example (YAML)::

    use_case: MDS
    delimiter: ";"            # optional, detected otherwise
    encoding: cp1252          # optional, detected otherwise (UTF-8, UTF-16 BOM, Windows-1252)
    date_format: "%d.%m.%Y"   # optional, ISO 8601 and day-first forms otherwise
    missing_values: ["n.b."]  # added to the built-in missing tokens
    columns: {hb: "Hämoglobin", os_months: "Überleben", os_event: "verstorben"}
    units: {hb: mmol/L, os_months: d}
    codes: {sex: {M: [männlich], F: [weiblich]}}
    synonyms: {plt: [thrombos]}
    gene_panel: [TP53, ASXL1, ...]   # genes sequenced when variants come as a long file
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .catalogue import load_yaml
from .errors import EtlError


class HospitalMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_case: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    date_format: str | None = None
    missing_values: list[str] = []
    columns: dict[str, str] = {}
    units: dict[str, str] = {}
    codes: dict[str, dict[str, list[str]]] = {}
    synonyms: dict[str, list[str]] = {}
    gene_panel: list[str] | None = None

    @field_validator("delimiter")
    @classmethod
    def _delim(cls, v):
        if v is None:
            return v
        v = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(v, v)
        if len(v) != 1:
            raise ValueError("delimiter must be one character (or tab, comma, semicolon, pipe)")
        return v


def load_mapping(path: str | Path | None) -> HospitalMapping:
    """Read and validate a mapping file; errors name the file and the offending key."""
    if path is None:
        return HospitalMapping()
    p = Path(path)
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        else:
            data = load_yaml(p)
    except (OSError, ValueError) as e:
        raise EtlError(f"cannot read mapping file: {e}", file=str(p)) from None
    except Exception as e:  # yaml errors
        raise EtlError(f"mapping file is not valid YAML: {e}", file=str(p)) from None
    try:
        return HospitalMapping.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        raise EtlError(f"invalid mapping: {'.'.join(map(str, err['loc']))}: {err['msg']}",
                       file=str(p)) from None
