"""Reading hospital text exports: encoding and delimiter detection, with errors that name the
file, row and reason. Every cell comes back as a string; parsing happens per column later."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EtlError

DELIMITERS = [",", ";", "\t", "|"]
_DELIM_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


@dataclass
class TextTable:
    """A decoded delimited file: header, rows (lists of str) and their 1-based line numbers."""
    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    encoding: str
    delimiter: str
    corrections: list[str] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def _line_of_offset(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def decode(raw: bytes, path: str, encoding: str | None = None) -> tuple[str, str, list[str]]:
    """Bytes -> text. Auto mode: BOM, then strict UTF-8, then Windows-1252 with a correction."""
    corrections: list[str] = []
    if encoding:
        try:
            return raw.decode(encoding), encoding, corrections
        except UnicodeDecodeError as e:
            raise EtlError(f"wrong encoding: not valid {encoding} (byte 0x{raw[e.start]:02x}); "
                           f"save the file as {encoding} or declare its encoding in the mapping",
                           file=path, row=_line_of_offset(raw, e.start)) from None
        except LookupError:
            raise EtlError(f"unknown encoding {encoding!r} in the mapping", file=path) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict"), "utf-8-sig", corrections
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        corrections.append("decoded as UTF-16 (byte-order mark)")
        return raw.decode("utf-16"), "utf-16", corrections
    if b"\x00" in raw[:4096]:
        raise EtlError("wrong encoding: the file contains NUL bytes (UTF-16 without a byte-order "
                       "mark, or not a text file); export it as UTF-8 CSV", file=path,
                       row=_line_of_offset(raw, raw.index(b"\x00")))
    try:
        return raw.decode("utf-8"), "utf-8", corrections
    except UnicodeDecodeError as e:
        first = _line_of_offset(raw, e.start)
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError as e:
        raise EtlError("wrong encoding: neither UTF-8 nor Windows-1252", file=path,
                       row=_line_of_offset(raw, e.start)) from None
    corrections.append(f"not valid UTF-8 (first at row {first}); decoded as Windows-1252")
    return text, "cp1252", corrections


def _csv_problem(e: csv.Error) -> str:
    """The reason of a csv module error in the ETL's words."""
    msg = str(e)
    if "field larger than field limit" in msg:
        return (f"a cell is longer than {csv.field_size_limit():,} characters; usually a quote (\") "
                f"opened in this row and never closed, or a document pasted into a cell")
    return f"unreadable CSV: {msg}"


def _split_lines(lines: list[str], delimiter: str) -> list[int]:
    """Cells per record; when the csv module cannot split the sample (a huge cell), per line with
    the lines it cannot split left out."""
    try:
        return [len(r) for r in csv.reader(lines, delimiter=delimiter)]
    except csv.Error:
        pass
    counts = []
    for ln in lines:
        try:
            counts.extend(len(r) for r in csv.reader([ln], delimiter=delimiter))
        except csv.Error:
            continue  # read_table reports it with its row
    return counts


def _sniff(lines: list[str]) -> str | None:
    best, best_score = None, (0, 0)
    for d in DELIMITERS:
        counts = _split_lines(lines, d)
        if not counts or counts[0] < 2:
            continue
        consistent = sum(1 for c in counts if c == counts[0])
        score = (consistent, counts[0])
        if score > best_score:
            best, best_score = d, score
    return best


def read_table(path: str | Path, delimiter: str | None = None, encoding: str | None = None
               ) -> TextTable:
    """Read a delimited text file (CSV/TSV...) into strings; fatal problems raise EtlError."""
    p = Path(path)
    name = str(p)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise EtlError(f"cannot read file: {e.strerror}", file=name) from None
    if not raw.strip():
        raise EtlError("empty file", file=name)
    text, enc, corrections = decode(raw, name, encoding)
    all_lines = text.splitlines()
    # Preamble lines some exports put above the header ("sep=;" from spreadsheets, "# ...")
    start = 0
    while start < len(all_lines):
        ln = all_lines[start].strip()
        if ln.lower().startswith("sep=") and len(ln) >= 5:
            if delimiter is None:
                delimiter = ln[4]
            corrections.append(f"skipped spreadsheet line {ln!r} at row {start + 1}")
        elif ln.startswith("#") or not ln:
            corrections.append(f"skipped preamble line at row {start + 1}")
        else:
            break
        start += 1
    if start >= len(all_lines):
        raise EtlError("no header row", file=name)
    body = all_lines[start:]
    sample = [ln for ln in body[:50] if ln.strip()]
    if delimiter is None:
        delimiter = _sniff(sample)
        if delimiter is None:
            raise EtlError("wrong delimiter: the header splits into a single column with comma, "
                           "semicolon, tab and pipe; declare 'delimiter' in the mapping",
                           file=name, row=start + 1)
    else:
        try:
            first = next(csv.reader([body[0]], delimiter=delimiter))
        except csv.Error as e:
            raise EtlError(_csv_problem(e), file=name, row=start + 1) from None
        if len(first) < 2:
            guess = _sniff(sample)
            hint = f"; the file appears to use {_DELIM_NAMES.get(guess, repr(guess))}" if guess else ""
            raise EtlError(f"wrong delimiter: with {_DELIM_NAMES.get(delimiter, repr(delimiter))} the "
                           f"header has a single column{hint}", file=name, row=start + 1)
    reader = csv.reader(io.StringIO("\n".join(body)), delimiter=delimiter)
    header: list[str] | None = None
    rows, lines, dropped = [], [], []
    while True:
        first_line = reader.line_num + 1 + start  # where the record being read starts
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise EtlError(_csv_problem(e), file=name, row=first_line) from None
        line = reader.line_num + start
        if header is None:
            header = [h.strip().lstrip("\ufeff") for h in rec]
            continue
        if not rec or all(not c.strip() for c in rec):
            dropped.append((line, "stray row: empty"))
            continue
        if [c.strip() for c in rec] == header:
            dropped.append((line, "stray row: repeated header"))
            continue
        if len(rec) != len(header):
            rows.append(rec)
            lines.append(line)
            continue  # reported per row by the caller (it knows the patient id)
        rows.append([c.strip() for c in rec])
        lines.append(line)
    assert header is not None
    empty = [i for i, h in enumerate(header) if not h]
    if empty and len(empty) < len(header):
        corrections.append(f"{len(empty)} unnamed column(s) ignored")
    dup = {h for h in header if h and header.count(h) > 1}
    if dup:
        raise EtlError(f"duplicate column name(s): {', '.join(sorted(dup))}", file=name, row=start + 1)
    return TextTable(name, header, rows, lines, enc, delimiter, corrections, dropped)
