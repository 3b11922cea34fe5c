"""CSV cells a spreadsheet will not run: a text cell starting with = + - @ (or tab / CR) is a
formula to Excel and LibreOffice, so it is written with a leading apostrophe (OWASP's advice).
Plain numbers such as -3.5 are left alone. In the kernel: the ETL's quarantine file and the
portal's audit export both write CSV through it."""
from __future__ import annotations

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def safe_cell(value):
    """`value` unchanged unless it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def safe_row(values) -> list:
    return [safe_cell(v) for v in values]
