"""Errors and row issues of the ETL: every message names the file, row, column and reason."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Issue:
    """One problem or correction found in a source file (row is 1-based, header = row 1)."""
    file: str
    row: int | None
    column: str | None
    reason: str
    patient_id: str | None = None
    # error: the patient is rejected; warning: kept, nothing lost; quarantined: kept, this one
    # value set missing (its source cell is in ``value``); converted: kept, value converted
    severity: str = "error"
    value: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = [self.file or "<input>"]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column!r}")
        pid = f" (patient {self.patient_id})" if self.patient_id else ""
        return f"{', '.join(where)}{pid}: {self.reason}"


class EtlError(Exception):
    """A fatal input error: nothing is written. Carries the same fields as an Issue."""

    def __init__(self, reason: str, file: str | None = None, row: int | None = None,
                 column: str | None = None):
        self.issue = Issue(file or "", row, column, reason)
        super().__init__(str(self.issue))


class RowError(Exception):
    """Raised while parsing one cell; turned into an Issue that rejects the row."""

    def __init__(self, column: str | None, reason: str):
        self.column = column
        self.reason = reason
        super().__init__(reason)
