"""What every source reader returns, and the duplicate-row rule they share."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Issue
from ..records import PatientRecord


@dataclass
class SourceResult:
    """Records plus everything the quality report must tell about how they were read."""
    records: list[PatientRecord] = field(default_factory=list)
    rejected: list[Issue] = field(default_factory=list)   # patient rows rejected (errors)
    dropped: list[Issue] = field(default_factory=list)    # non-patient rows and exact duplicates
    warnings: list[Issue] = field(default_factory=list)
    quarantined: list[Issue] = field(default_factory=list)  # values set missing, patient kept
    value_conversions: list[Issue] = field(default_factory=list)  # per-row unit detections
    refusals: list[str] = field(default_factory=list)  # fatal problems collected by a dry run
    column_status: list[dict] = field(default_factory=list)  # per source column: what happens
    declared: dict[str, str] = field(default_factory=dict)  # field -> constant declared in mapping
    values_seen: dict[str, dict] = field(default_factory=dict)  # field -> {source token: count}
    files: list[dict] = field(default_factory=list)
    conversions: list[dict] = field(default_factory=list)
    column_mapping: dict[str, str] = field(default_factory=dict)
    unmapped_columns: list[str] = field(default_factory=list)
    input_patient_ids: list[str] = field(default_factory=list)
    n_input_rows: int = 0
    layout: str = ""
    raw_rows: dict = field(default_factory=dict)  # (file, row) -> {column: cell} of rejected rows


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_info(path: str | Path, table=None) -> dict:
    info = {"path": str(path), "sha256": sha256_file(path)}
    if table is not None:
        info.update({"rows": len(table.rows), "encoding": table.encoding,
                     "delimiter": table.delimiter, "corrections": list(table.corrections)})
    return info


def dedupe_rows(rows: list[tuple[str, int, tuple]], file: str, result: SourceResult
                ) -> tuple[set[int], set[str]]:
    """rows: (patient_id, line, raw cells). Returns (lines to skip, ids rejected as conflicting).

    An exact repeat of a row is dropped (counted as a duplicate); two different rows for one
    patient reject the patient, since the ETL cannot know which one is right.
    """
    first: dict[str, tuple[int, tuple]] = {}
    skip: set[int] = set()
    conflicting: set[str] = set()
    lines_of: dict[str, list[int]] = {}
    for pid, line, raw in rows:
        lines_of.setdefault(pid, []).append(line)
        if pid not in first:
            first[pid] = (line, raw)
            continue
        if raw == first[pid][1]:
            skip.add(line)
            result.dropped.append(Issue(file, line, None, f"duplicate row: identical to row "
                                        f"{first[pid][0]}", pid, "warning"))
        else:
            conflicting.add(pid)
    for pid in conflicting:
        for line in lines_of[pid]:
            if line in skip:
                continue
            result.rejected.append(Issue(file, line, None, "duplicate patient id with conflicting "
                                         f"values (rows {', '.join(map(str, lines_of[pid]))})", pid))
            skip.add(line)
    return skip, conflicting
