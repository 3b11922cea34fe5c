"""The strict shape of dataset metadata a worker node sends (announcements, heartbeats):
figures about a table, never its rows.

A quality summary holds counts, fractions and per-column completeness and ranges, within
bounded sizes. Anything row-shaped (a list of records, a patient identifier as a key) is
refused before the schema is even tried, so the refusal can say so and be audited.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

PATIENTS_MAX = 10**7  # patients in one dataset
ROWS_MAX = 10**8  # source rows (several per patient in long layouts)
VERSION_MAX = 10**6
COLUMNS_MAX = 500  # columns described by one quality summary
FEATURES_MAX = 5000  # column names of one dataset's feature schema (embeddings included)
COLUMN_NAME_MAX = 120
DATASET_NAME_MAX = 80
FINGERPRINT_PATTERN = r"^[0-9a-f]{64}$"  # sha256 of the table's canonical bytes (etl.table)
DEPTH_MAX = 4  # nesting of the summary's JSON (summary -> columns -> column -> range)

# Keys that only a patient-level record carries. Normalised: lower case, no _ - or space.
IDENTIFIER_KEYS = frozenset({
    "patientid", "patient", "pid", "mrn", "subjectid", "subject", "recordid", "personid", "caseid",
    "nhsnumber", "ssn", "nationalid", "dob", "dateofbirth", "birthdate", "name", "firstname",
    "lastname", "surname", "address", "postcode", "zipcode", "phone", "email",
})

Count = Annotated[int, Field(strict=True, ge=0, le=ROWS_MAX)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ColumnName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=COLUMN_NAME_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnQuality(_Strict):
    """One column: how complete, and the range of its values (the column's unit)."""

    completeness: Fraction | None = None
    missing: Count | None = None
    range: Annotated[list[Number], Field(min_length=2, max_length=2)] | None = None
    min: Number | None = None
    max: Number | None = None
    kind: Literal["numeric", "binary", "categorical", "date", "text", "embedding"] | None = None
    unit: Annotated[str, StringConstraints(strict=True, max_length=16)] | None = None
    out_of_range_rejected: Count | None = None

    @model_validator(mode="after")
    def _ordered(self):
        for lo, hi, what in ((self.range[0] if self.range else None, self.range[1] if self.range else None,
                              "range"), (self.min, self.max, "min/max")):
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{what}: the minimum is above the maximum")
        return self


class QualitySummary(_Strict):
    """What etl.quality.quality_summary announces, plus optional per-column completeness/ranges."""

    patients: Annotated[int, Field(strict=True, ge=0, le=PATIENTS_MAX)] | None = None
    rejected_patients: Count | None = None
    rejected_rows: Count | None = None
    dropped_rows: Count | None = None
    duplicates: Count | None = None
    unit_conversions: Count | None = None
    out_of_range: Count | None = None
    completeness_mean: Fraction | None = None
    columns_below_50pct: Annotated[list[ColumnName], Field(max_length=COLUMNS_MAX)] = Field(default_factory=list)
    fhir_valid: Annotated[bool, Field(strict=True)] | None = None
    columns: Annotated[dict[ColumnName, ColumnQuality], Field(max_length=COLUMNS_MAX)] = Field(default_factory=dict)


class MetadataRefused(ValueError):
    """Metadata outside the schema. `problems`: [(field path, reason)]; `row_shaped`: whether
    the refusal is because the metadata looks like patient-level rows."""

    def __init__(self, problems: list[tuple[str, str]], row_shaped: bool):
        self.problems, self.row_shaped = problems, row_shaped
        super().__init__("; ".join(f"{p}: {r}" for p, r in problems))


def _norm(key: str) -> str:
    return "".join(ch for ch in key.lower() if ch.isalnum())


def row_shaped_paths(value, path: str, depth: int = 0) -> list[tuple[str, str]]:
    """(path, reason) of every place in a JSON value that looks like patient-level rows."""
    found: list[tuple[str, str]] = []
    if depth > DEPTH_MAX:
        return [(path, f"nested deeper than {DEPTH_MAX} levels")]
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}"
            if isinstance(k, str) and _norm(k) in IDENTIFIER_KEYS:
                found.append((sub, "a patient identifier or personal field; metadata carries no rows"))
            else:
                found += row_shaped_paths(v, sub, depth + 1)
    elif isinstance(value, list):
        if any(isinstance(x, (dict, list)) for x in value):
            found.append((path, "a list of records (row-shaped data); metadata carries no rows"))
        elif len(value) > 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            # a range is two numbers; a longer list of numbers is a column of per-patient values
            found.append((path, "a list of per-patient values; metadata carries figures, not values"))
    return found[:20]


def validate_quality_summary(value, field: str = "quality_summary") -> dict:
    """The summary checked against QualitySummary; raises MetadataRefused naming each field."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MetadataRefused([(field, f"must be an object, got {type(value).__name__}")],
                              row_shaped=isinstance(value, list))
    rows = row_shaped_paths(value, field)
    if rows:
        raise MetadataRefused(rows, row_shaped=True)
    try:
        return QualitySummary.model_validate(value).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = [(".".join([field, *(str(p) for p in e["loc"])]), e["msg"]) for e in exc.errors()[:20]]
        raise MetadataRefused(problems, row_shaped=False) from None
