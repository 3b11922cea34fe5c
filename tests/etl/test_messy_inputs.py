"""Messy hospital files: renamed columns, other units, missing cells, stray rows, encodings,
delimiters; the ETL corrects what it can and rejects the rest with file, row, column, reason."""
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import EtlError
from etl.pipeline import run_etl

from .synth import canonical_cohort, hospital_export

COMPARE = ["age", "sex", "hb", "plt", "anc", "wbc", "bm_blast", "cyto_ipssr", "del5q", "TP53",
           "ASXL1", "SF3B1", "hma", "os_months", "os_event"]


def _check_equal(table: pd.DataFrame, want: pd.DataFrame):
    t = table.set_index("patient_id").loc[want.patient_id]
    w = want.set_index("patient_id")
    for c in COMPARE:
        if w[c].dtype == object:
            assert list(t[c]) == list(w[c]), c
        else:
            np.testing.assert_allclose(t[c].astype(float), w[c].astype(float), rtol=1e-9, atol=1e-9,
                                       err_msg=c)


def test_canonical_csv_round_trips(tmp_path):
    df = canonical_cohort()
    df.to_csv(tmp_path / "h.csv", index=False)
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    _check_equal(res.table, df)
    assert res.report["summary"]["rejected_patients"] == 0
    assert res.report["summary"]["unit_conversions"] == 0
    html = (res.out_dir / "quality.html").read_text()
    assert html.count("<table") == html.count("</table>") and all(f"<td>{c}</td>" in html for c in COMPARE)


def test_renamed_columns_other_units_and_codings_are_corrected(tmp_path):
    df = canonical_cohort()
    exp = hospital_export(df)
    exp.to_csv(tmp_path / "h.csv", sep=";", index=False, encoding="cp1252")
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    _check_equal(res.table, df)
    conv = {c["column"]: c for c in res.report["unit_conversions"]}
    assert conv["hb"]["from"] == "g/L" and conv["hb"]["factor"] == pytest.approx(0.1)
    assert conv["plt"]["factor"] == pytest.approx(0.001) and conv["plt"]["how"].startswith("inferred")
    assert conv["os_months"]["from"] == "days"
    assert "anc" not in conv and "wbc" not in conv  # G/L and 10^3/uL are the schema unit
    assert res.report["column_mapping"]["hb"].endswith("Hb (g/L)")
    assert res.report["column_mapping"]["TP53"].endswith("mut_TP53")


def test_hb_mmol_per_litre_declared_in_mapping(tmp_path):
    df = canonical_cohort(n=30, seed=3)
    out = df.rename(columns={"hb": "Hämoglobin"})
    out["Hämoglobin"] = df.hb / 1.61145
    out.to_csv(tmp_path / "h.csv", index=False)
    (tmp_path / "map.yaml").write_text("columns: {hb: 'Hämoglobin'}\nunits: {hb: mmol/L}\n", encoding="utf-8")
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out", mapping=tmp_path / "map.yaml")
    _check_equal(res.table, df)
    assert res.report["unit_conversions"][0]["how"] == "declared in mapping"


def test_units_written_in_cells_are_converted_per_cell(tmp_path):
    df = canonical_cohort(n=20, seed=4)
    out = df.copy().astype({"hb": object})
    out.loc[::2, "hb"] = [f"{v * 10:g} g/L" for v in df.hb[::2]]
    out.loc[1::2, "hb"] = [f"{v:g} g/dL" for v in df.hb[1::2]]
    out.to_csv(tmp_path / "h.csv", index=False)
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    _check_equal(res.table, df)


def test_missing_cells_become_missing_and_completeness_is_reported(tmp_path):
    df = canonical_cohort(n=40, seed=5)
    out = df.astype({"hb": object, "plt": object})
    out.loc[:9, "hb"] = ["", "NA", "n.d.", "?", "", "", "NA", "", "", ""]
    out.loc[:3, "plt"] = ""
    out.to_csv(tmp_path / "h.csv", index=False)
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    t = res.table.set_index("patient_id").loc[df.patient_id]
    assert t.hb.isna().sum() == 10 and t.plt.isna().sum() == 4
    cols = res.report["columns"]
    assert cols["hb"]["completeness"] == pytest.approx(30 / 40)
    assert cols["plt"]["missing"] == 4
    assert len(res.table) == 40


def test_stray_rows_are_dropped_with_reasons(tmp_path):
    df = canonical_cohort(n=10, seed=6)
    lines = df.to_csv(index=False).splitlines()
    header = lines[0]
    messy = ["sep=,", "# exported from the lab system", header] + lines[1:4] + ["", header] + \
            lines[4:] + [",,,,,,,,,,,,,,,", "Total" + "," * 15, lines[2]]
    (tmp_path / "h.csv").write_text("\n".join(messy) + "\n", encoding="utf-8")
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    assert sorted(res.table.patient_id) == sorted(df.patient_id)
    reasons = [d["reason"] for d in res.report["dropped_rows"]]
    assert any("repeated header" in r for r in reasons)
    assert any("empty" in r for r in reasons)
    assert any("duplicate row" in r for r in reasons)
    assert any("no data besides the id 'Total'" in r for r in reasons)
    assert res.report["rejected"] == []
    assert any("preamble" in c or "spreadsheet" in c for c in res.report["sources"][0]["corrections"])


def test_conflicting_duplicates_are_rejected_both(tmp_path):
    df = canonical_cohort(n=10, seed=7)
    dup = df.iloc[[2]].copy()
    dup["hb"] = dup["hb"] + 1
    pd.concat([df, dup]).to_csv(tmp_path / "h.csv", index=False)
    # 1 patient of 10 rejected is above the default limit of 5%: the run says so, writes nothing
    with pytest.raises(EtlError, match=r"1 of 10 patients rejected \(10.0%\), above the limit of 5%"):
        run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out", max_rejected_fraction=0.2)
    assert df.patient_id[2] not in set(res.table.patient_id)
    rej = [r for r in res.report["rejected"] if r["patient_id"] == df.patient_id[2]]
    assert len(rej) == 2 and all("conflicting" in r["reason"] for r in rej)
    assert res.report["summary"]["duplicates"] == 2


@pytest.mark.parametrize("cell,column,reason", [
    ("abc", "hb", "unparseable number"),
    ("250", "age", "impossible value"),
    ("-3", "hb", "impossible value"),
    ("maybe", "sex", "unknown value"),
])
def test_a_bad_cell_becomes_missing_and_is_quarantined_the_patient_stays(tmp_path, cell, column, reason):
    df = canonical_cohort(n=12, seed=8).astype({column: object})
    df.loc[5, column] = cell
    df.to_csv(tmp_path / "h.csv", index=False)
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    assert res.report["rejected"] == [] and len(res.table) == 12
    t = res.table.set_index("patient_id")
    assert pd.isna(t.loc[df.patient_id[5], column])
    others = t.drop(index=df.patient_id[5])[column]
    assert others.notna().all()
    q = res.report["quarantined_values"]
    assert len(q) == 1
    r = q[0]
    assert r["file"].endswith("h.csv") and r["row"] == 7 and r["column"] == column
    assert reason in r["reason"] and r["patient_id"] == df.patient_id[5] and r["value"] == cell
    assert res.report["columns"][column]["quarantined"] == 1
    assert res.report["summary"]["quarantined_values"] == 1
    quar = pd.read_csv(res.out_dir / "quarantine.csv", dtype=str)
    assert list(quar.patient_id) == [df.patient_id[5]] and quar.row[0] == "7"
    assert quar.action[0] == "value set missing" and quar.value[0].lstrip("'") == cell


def test_unparseable_date_rejects_row(tmp_path):
    df = canonical_cohort(n=8, seed=9).drop(columns=["os_months"])
    df["diagnosis_date"] = "2020-01-15"
    df["last_followup_date"] = ["2021-01-15"] * 7 + ["31/02/2021"]
    df.to_csv(tmp_path / "h.csv", index=False)
    # survival data: an unusable date rejects the patient (1 of 8, above the default 5%)
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out", max_rejected_fraction=0.2)
    assert res.report["rejected"][0]["column"] == "last_followup_date"
    assert "unparseable date" in res.report["rejected"][0]["reason"]
    t = res.table.set_index("patient_id")
    assert t.os_months.iloc[0] == pytest.approx(366 / 30.4375)


def test_unknown_gene_symbol_in_variant_file_rejects_that_patient(tmp_path):
    df = canonical_cohort(n=6, seed=10).drop(columns=["TP53", "ASXL1", "SF3B1"])
    df.to_csv(tmp_path / "patients.csv", index=False)
    pd.DataFrame({"patient_id": ["P0000", "P0001", "P0002", "P0099"],
                  "gene": ["TP53", "TP35", "MLL", "TP53"],
                  "protein_change": ["p.R248Q", "p.X1", "p.Q1", "p.R1"],
                  "vaf": [35.0, 10.0, 20.0, 5.0]}).to_csv(tmp_path / "variants.csv", index=False)
    res = run_etl("mds", [tmp_path / "patients.csv", tmp_path / "variants.csv"], tmp_path / "out",
                  max_rejected_fraction=0.2)
    rej = res.report["rejected"]
    assert [(r["patient_id"], r["column"]) for r in rej] == [("P0001", "gene")]
    assert "unknown gene symbol 'TP35'" in rej[0]["reason"] and rej[0]["row"] == 3
    t = res.table.set_index("patient_id")
    assert t.loc["P0000", "TP53"] == 1 and t.loc["P0000", "tp53_maxvaf"] == pytest.approx(0.35)
    assert t.loc["P0003", "TP53"] == 0 and t.loc["P0003", "tp53_maxvaf"] == 0
    assert any(d["patient_id"] == "P0099" for d in res.report["dropped_rows"])


def test_unknown_gene_column_is_fatal(tmp_path):
    df = canonical_cohort(n=5, seed=11)
    df["mut_ASXL9"] = 0
    df.to_csv(tmp_path / "h.csv", index=False)
    with pytest.raises(EtlError, match="unknown gene symbol 'ASXL9'") as e:
        run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    assert e.value.issue.column == "mut_ASXL9"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_required_column_is_fatal_and_writes_nothing(tmp_path):
    df = canonical_cohort(n=5).drop(columns=["age"])
    df.to_csv(tmp_path / "h.csv", index=False)
    with pytest.raises(EtlError, match="missing required column age") as e:
        run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out")
    assert e.value.issue.file.endswith("h.csv")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_encodings(tmp_path):
    df = canonical_cohort(n=8, seed=12).rename(columns={"hb": "Hämoglobin"})
    df.to_csv(tmp_path / "latin.csv", index=False, encoding="cp1252")
    res = run_etl("mds", [tmp_path / "latin.csv"], tmp_path / "o1")
    assert res.report["sources"][0]["encoding"] == "cp1252"
    assert any("Windows-1252" in c for c in res.report["sources"][0]["corrections"])
    assert res.report["column_mapping"]["hb"].endswith("Hämoglobin")
    df.to_csv(tmp_path / "u16.csv", index=False, encoding="utf-16")  # with BOM
    assert len(run_etl("mds", [tmp_path / "u16.csv"], tmp_path / "o2").table) == 8
    (tmp_path / "u16le.csv").write_bytes(df.to_csv(index=False).encode("utf-16-le"))
    with pytest.raises(EtlError, match="NUL bytes"):
        run_etl("mds", [tmp_path / "u16le.csv"], tmp_path / "o3")
    (tmp_path / "m.yaml").write_text("encoding: utf-8\n")
    with pytest.raises(EtlError, match="not valid utf-8") as e:
        run_etl("mds", [tmp_path / "latin.csv"], tmp_path / "o4", mapping=tmp_path / "m.yaml")
    assert e.value.issue.row == 1


def test_delimiters(tmp_path):
    df = canonical_cohort(n=8, seed=13)
    text = df.to_csv(index=False, sep=";", decimal=",")
    (tmp_path / "semi.csv").write_text(text)
    res = run_etl("mds", [tmp_path / "semi.csv"], tmp_path / "o1")
    _check_equal(res.table, df)  # decimal commas read as decimals
    (tmp_path / "m.yaml").write_text("delimiter: tab\n")
    with pytest.raises(EtlError, match="wrong delimiter.*semicolon"):
        run_etl("mds", [tmp_path / "semi.csv"], tmp_path / "o2", mapping=tmp_path / "m.yaml")
    (tmp_path / "one.csv").write_text("patient_id age hb\nP1 60 9\n")
    with pytest.raises(EtlError, match="wrong delimiter"):
        run_etl("mds", [tmp_path / "one.csv"], tmp_path / "o3")


def test_row_with_extra_fields_is_rejected(tmp_path):
    df = canonical_cohort(n=6, seed=14)
    lines = df.to_csv(index=False).splitlines()
    lines[3] = lines[3] + ",surplus"
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "out", max_rejected_fraction=0.2)
    assert [r["row"] for r in res.report["rejected"]] == [4]
    assert "fields" in res.report["rejected"][0]["reason"]


@settings(max_examples=25, deadline=None)
@given(hb=st.floats(3.0, 19.0), unit=st.sampled_from(["g/dL", "g/L", "mmol/L"]),
       plt=st.floats(1.0, 1500.0), cunit=st.sampled_from(["10^9/L", "/uL", "G/L", "10*3/uL"]))
def test_unit_conversion_round_trip(hb, unit, plt, cunit):
    from etl.catalogue import catalogue
    from etl.records import parse_number, unit_factor
    spec = catalogue("mds").fields
    f = unit_factor(spec["hb"].units, unit)
    raw = hb / f
    v, u, _ = parse_number(f"{raw!r} {unit}", "hb")
    assert u == unit and v * unit_factor(spec["hb"].units, u) == pytest.approx(hb, rel=1e-12)
    g = unit_factor(spec["plt"].units, cunit)
    assert plt / g * g == pytest.approx(plt, rel=1e-12)
    assert g in (1.0, 0.001)


def test_json_mapping_with_codes_and_missing_tokens_stays_in_its_run(tmp_path):
    df = canonical_cohort(n=10, seed=15)
    out = df.rename(columns={"sex": "Geschlecht"}).astype({"hb": object})
    out["Geschlecht"] = df.sex.map({"M": "mannl.", "F": "weibl."})
    out.loc[0, "hb"] = "k.A.x"
    out.to_csv(tmp_path / "h.csv", index=False)
    (tmp_path / "m.json").write_text(json.dumps({
        "use_case": "MDS", "columns": {"sex": "Geschlecht"},
        "codes": {"sex": {"M": ["mannl."], "F": ["weibl."]}}, "missing_values": ["k.A.x"]}))
    res = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "o1", mapping=tmp_path / "m.json")
    assert list(res.table.set_index("patient_id").loc[df.patient_id, "sex"]) == list(df.sex)
    assert np.isnan(res.table.set_index("patient_id").loc[df.patient_id[0], "hb"])
    # without the mapping the same file is refused, naming the values: nothing leaked from the
    # last run
    with pytest.raises(EtlError, match=r"column 'Geschlecht' \(sex\): 2 value\(s\) not mapped: "
                                       r"'(mannl|weibl)\.' \(\d+ of 10 filled cells\)"):
        run_etl("mds", [tmp_path / "h.csv"], tmp_path / "o2", max_rejected_fraction=1.0)
    assert not (tmp_path / "o2").exists()
    (tmp_path / "bad.json").write_text(json.dumps({"colums": {}}))
    with pytest.raises(EtlError, match="invalid mapping: line 1, colums: unknown key 'colums'"):
        run_etl("mds", [tmp_path / "h.csv"], tmp_path / "o3", mapping=tmp_path / "bad.json")


def _huge_cell_export(tmp_path, quote: bool):
    df = canonical_cohort(n=12, seed=21)
    lines = df.to_csv(index=False).splitlines()
    cells = lines[5].split(",")
    cells[2] = ('"' + "x" * 5_000_000 + '"') if quote else "y" * 5_000_000  # a 5 MB cell in row 6
    lines[5] = ",".join(cells)
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "big.csv"


@pytest.mark.parametrize("quote", [True, False])
def test_a_5_mb_cell_is_a_clear_error_naming_file_and_row(tmp_path, quote):
    src = _huge_cell_export(tmp_path, quote)
    with pytest.raises(EtlError, match="longer than 131,072 characters") as e:
        run_etl("mds", [src], tmp_path / "out")
    assert e.value.issue.file == str(src) and e.value.issue.row == 6
    assert "big.csv, row 6" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_an_unclosed_quote_names_the_row_where_it_opens(tmp_path):
    df = canonical_cohort(n=400, seed=22)
    lines = df.to_csv(index=False).splitlines()
    lines[3] = lines[3].replace(",", ',"', 1)  # the quote swallows every later row into one cell
    lines += [",".join(["z" * 400] * 16)] * 400  # enough text after it to pass the cell limit
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(EtlError, match="quote") as e:
        run_etl("mds", [tmp_path / "q.csv"], tmp_path / "out")
    assert e.value.issue.row == 4


def test_cli_reports_a_huge_cell_and_writes_nothing(tmp_path, capsys):
    from etl.cli import main

    src = _huge_cell_export(tmp_path, quote=True)
    assert main(["etl", "--use-case", "mds", "--source", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {src}, row 6: a cell is longer than" in err and "nothing was written" in err
    assert not (tmp_path / "out").exists()


def test_out_pointing_at_an_existing_file_is_a_clear_error(tmp_path, capsys):
    from etl.cli import main

    df = canonical_cohort(n=10, seed=23)
    df.to_csv(tmp_path / "h.csv", index=False)
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(EtlError, match="existing file, not a folder") as e:
        run_etl("mds", [tmp_path / "h.csv"], target)
    assert e.value.issue.file == str(target)
    with pytest.raises(EtlError, match=r"parent .*results.txt is an existing file"):
        run_etl("mds", [tmp_path / "h.csv"], target / "sub")
    assert main(["etl", "--use-case", "mds", "--source", str(tmp_path / "h.csv"), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"error: {target}: the output folder is an existing file" in err and "nothing was written" in err
    assert target.read_text() == "keep me"
    # an existing folder (a previous output) is still fine
    assert main(["etl", "--use-case", "mds", "--source", str(tmp_path / "h.csv"), "--out", str(tmp_path / "o")]) == 0
    assert main(["etl", "--use-case", "mds", "--source", str(tmp_path / "h.csv"), "--out", str(tmp_path / "o")]) == 0
