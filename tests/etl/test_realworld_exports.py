"""Exports as hospitals send them: sex coded 0/1, split gene columns, mixed units, lesions never
tested, columns that are not genes, one extreme value. The mapping language reads them; every
conversion and refusal is in the quality report; exit codes say what happened."""
import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from etl.cli import main
from etl.errors import EtlError
from etl.pipeline import run_etl

N = 200


def aml_truth(n: int = N, seed: int = 0) -> pd.DataFrame:
    """Patients in schema names and units (what the table must hold)."""
    rng = np.random.default_rng(seed)
    r140 = rng.random(n) < 0.08
    r172 = rng.random(n) < 0.04
    return pd.DataFrame({
        "patient_id": [f"AML{i:04d}" for i in range(n)],
        "age": rng.integers(18, 90, n).astype(float),
        "sex": rng.choice(["F", "M"], n),
        "hb": rng.normal(9.5, 1.6, n).round(1).clip(4, 16),
        "wbc": rng.gamma(1.5, 12, n).round(1).clip(0.3, 400),
        "bm_blast": rng.integers(20, 95, n).astype(float),
        "FLT3_ITD": (rng.random(n) < 0.25).astype(float),
        "NPM1": (rng.random(n) < 0.3).astype(float),
        "IDH2": (r140 | r172).astype(float),
        "_r140": r140, "_r172": r172,
        "os_months": rng.uniform(0.5, 80, n).round(2),
        "os_event": (rng.random(n) < 0.6).astype(float),
    })


def hostile_export(truth: pd.DataFrame, g_per_l_every: int = 10) -> pd.DataFrame:
    """The same patients as a hospital exports them."""
    hb = truth.hb.astype(object).copy()
    gl = truth.index % g_per_l_every == 3
    hb[gl] = (truth.hb[gl] * 10).round(0).astype(int).astype(str)     # g/L, no unit anywhere
    hb[~gl] = truth.hb[~gl].map(lambda v: f"{v:.1f}")
    return pd.DataFrame({
        "Pat-ID": truth.patient_id,
        "Age": truth.age.astype(int),
        "Sex": truth.sex.map({"F": 0, "M": 1}),
        "Hb": hb,
        "WBC": truth.wbc,
        "BM blasts %": truth.bm_blast,
        "FLT3-ITD": truth.FLT3_ITD.map({1.0: "pos", 0.0: "neg"}),
        "NPM1": truth.NPM1.astype(int),
        "IDH2_R140": truth._r140.astype(int),
        "IDH2_R172": truth._r172.map({True: "mut", False: "wt"}),
        "performance_status": np.arange(len(truth)) % 3,
        "MRD_status": np.where(np.arange(len(truth)) % 2, "negative", "positive"),
        "ECOG": np.arange(len(truth)) % 4,
        "Protocol": np.where(np.arange(len(truth)) % 3, "AMLSG 09-09", "off study"),
        "OS (days)": (truth.os_months * 30.4375).round(3),
        "Status": truth.os_event.map({1.0: "dead", 0.0: "alive"}),
    })


MAPPING = """\
use_case: AML
fields:
  patient_id: Pat-ID
  sex: {column: Sex, codes: {"0": F, "1": M}}
  hb: {column: Hb, unit: detect}
  bm_blast: BM blasts %
  FLT3_ITD: {column: FLT3-ITD, codes: {pos: 1, neg: 0}}
  IDH2: {any_of: [IDH2_R140, IDH2_R172]}
  t_9_22: {constant: not_tested}
  inv3: {constant: not_tested, note: never on the panel}
  transplant: {constant: 0}
  ecog: ECOG
  os_event: {column: Status, codes: {dead: 1, alive: 0}}
ignore: [performance_status, MRD_status]
extra:
  protocol: Protocol
"""


@pytest.fixture
def export(tmp_path):
    truth = aml_truth()
    exp = hostile_export(truth)
    exp.loc[17, "WBC"] = 532.7                      # a real hyperleukocytic patient
    exp.loc[41, "OS (days)"] = -12                   # survival time unusable: rejected
    exp.to_csv(tmp_path / "aml.csv", index=False, sep=";")
    (tmp_path / "map.yaml").write_text(MAPPING, encoding="utf-8")
    return truth, exp, tmp_path


def test_the_mapping_reads_a_hostile_export_and_keeps_the_right_patients(export):
    truth, exp, d = export
    res = run_etl("aml", [d / "aml.csv"], d / "out", mapping=d / "map.yaml")
    rep = res.report
    # one patient rejected (unusable survival time), every other kept
    assert [r["patient_id"] for r in rep["rejected"]] == [truth.patient_id[41]]
    assert rep["rejected"][0]["column"] == "os_months"
    assert set(res.table.patient_id) == set(truth.patient_id) - {truth.patient_id[41]}
    t = res.table.set_index("patient_id")
    w = truth.set_index("patient_id").drop(index=truth.patient_id[41])
    t = t.loc[w.index]
    assert list(t.sex) == list(w.sex)
    np.testing.assert_allclose(t.hb, w.hb, rtol=0, atol=0.051)  # g/L exported as whole numbers
    for c in ("FLT3_ITD", "NPM1", "IDH2", "bm_blast", "os_event"):
        np.testing.assert_array_equal(t[c].to_numpy(float), w[c].to_numpy(float), err_msg=c)
    np.testing.assert_allclose(t.os_months, w.os_months, atol=1e-3)
    # the extreme value is missing and quarantined; its patient stays
    p17 = truth.patient_id[17]
    assert np.isnan(t.loc[p17, "wbc"]) and t.drop(index=p17).wbc.notna().all()
    q = [x for x in rep["quarantined_values"] if x["patient_id"] == p17]
    assert len(q) == 1 and q[0]["column"] == "wbc" and q[0]["value"] == "532.7"
    assert "outside [0, 500]" in q[0]["reason"]
    # not tested is declared, missing, and not a completeness problem; transplant is a constant
    assert t.t_9_22.isna().all() and t.inv3.isna().all()
    assert rep["columns"]["t_9_22"]["declared"] == "not tested"
    assert rep["summary"]["not_tested"] == ["inv3", "t_9_22"]
    assert "t_9_22" not in rep["summary"]["columns_below_50pct"]
    assert (t.transplant == 0).all() and rep["summary"]["declared_constants"] == {"transplant": "constant 0"}
    # every value converted per row is listed, with its row
    gl_rows = [i for i in range(N) if i % 10 == 3 and i != 41]
    conv = rep["value_conversions"]
    assert len(conv) == len(gl_rows) == rep["summary"]["values_converted_per_row"]
    assert {c["row"] for c in conv} == {i + 2 for i in gl_rows}
    assert all(c["column"] == "Hb" and "read as g/L" in c["reason"] for c in conv)
    hb_conv = [c for c in rep["unit_conversions"] if c["column"] == "hb"]
    assert hb_conv[0]["from"] == "g/L" and hb_conv[0]["rows"] == len(gl_rows)
    # what happened to each source column
    status = {c["column"]: (c["status"], c["field"]) for c in rep["source_columns"]}
    assert status["performance_status"] == ("ignored", None) and status["MRD_status"] == ("ignored", None)
    assert status["IDH2_R172"] == ("bound", "IDH2") and status["Protocol"] == ("extra", "protocol")
    # ECOG performance status is a schema field (0-4), carried in FHIR under its LOINC code
    assert status["ECOG"] == ("bound", "ecog")
    np.testing.assert_array_equal(t.ecog.to_numpy(), np.delete(np.arange(N) % 4, 41))
    assert '"code":"89247-1"' in (res.out_dir / "bundles.ndjson").read_text()
    assert rep["column_mapping"]["IDH2"] == "any of: aml.csv:IDH2_R140, aml.csv:IDH2_R172"
    # the field outside the schema is carried in extra.csv and in FHIR, never in the table
    extra = pd.read_csv(res.out_dir / "extra.csv", dtype=str).set_index("patient_id")
    assert extra.loc[truth.patient_id[5], "protocol"] == "AMLSG 09-09" and "protocol" not in res.table.columns
    assert '"code":"extra-protocol"' in (res.out_dir / "bundles.ndjson").read_text()
    # quarantine.csv: the rejected patient and the blanked value
    quar = pd.read_csv(res.out_dir / "quarantine.csv", dtype=str)
    assert sorted(quar.action) == ["patient rejected", "value set missing"]


def test_the_bundles_read_back_to_the_same_table(export):
    truth, exp, d = export
    first = run_etl("aml", [d / "aml.csv"], d / "a", mapping=d / "map.yaml")
    second = run_etl("aml", [first.out_dir / "bundles.ndjson"], d / "b")
    pd.testing.assert_frame_equal(first.table, second.table)


def test_without_a_mapping_a_status_column_that_is_no_gene_names_the_fix(export):
    truth, exp, d = export
    with pytest.raises(EtlError, match=r"unknown gene symbol 'MRD'; if 'MRD_status' is not a gene, "
                                       r"list it under 'ignore:'") as e:
        run_etl("aml", [d / "aml.csv"], d / "out")
    assert e.value.issue.column == "MRD_status"
    # performance_status is not written like a gene symbol: it is an unknown column, not an error
    exp.drop(columns=["MRD_status"]).rename(columns={"Pat-ID": "Patient ID"}).to_csv(
        d / "aml2.csv", index=False, sep=";")
    with pytest.raises(EtlError, match=r"column 'Sex' \(sex\): 1 value\(s\) not mapped: '0' "
                                       r"\(\d+ of 200 filled cells\).*ISO 5218.*codes: \{'0': \.\.\., '1': \.\.\.\}"):
        run_etl("aml", [d / "aml2.csv"], d / "out")
    assert not (d / "out").exists()


def test_sex_coded_0_1_needs_its_codes_and_the_cli_exits_2(export, capsys):
    truth, exp, d = export
    mapping = MAPPING.replace('sex: {column: Sex, codes: {"0": F, "1": M}}', "sex: Sex")
    (d / "m2.yaml").write_text(mapping)
    rc = main(["etl", "--use-case", "aml", "--source", str(d / "aml.csv"), "--mapping", str(d / "m2.yaml"),
               "--out", str(d / "out")])
    err = capsys.readouterr().err
    n0 = int((exp.Sex == 0).sum())
    assert rc == 2 and f"'0' ({n0} of 200 filled cells)" in err and "nothing was written" in err
    assert "Traceback" not in err and not (d / "out").exists()


def test_a_closed_code_list_names_every_unmapped_value_and_its_count(export):
    truth, exp, d = export
    exp.loc[[3, 4, 9], "FLT3-ITD"] = ["equivocal", "equivocal", "pending"]
    exp.to_csv(d / "aml.csv", index=False, sep=";")
    with pytest.raises(EtlError, match=r"column 'FLT3-ITD' \(FLT3_ITD\): 2 value\(s\) not mapped: "
                                       r"'equivocal' \(2 of 200 filled cells\), 'pending' \(1 of 200"):
        run_etl("aml", [d / "aml.csv"], d / "out", mapping=d / "map.yaml")
    (d / "m3.yaml").write_text(MAPPING.replace("{pos: 1, neg: 0}", "{pos: 1, neg: 0, equivocal: null, pending: null}"))
    res = run_etl("aml", [d / "aml.csv"], d / "out", mapping=d / "m3.yaml")
    t = res.table.set_index("patient_id")
    assert t.loc[truth.patient_id[[3, 4, 9]], "FLT3_ITD"].isna().all()


def test_a_field_the_schema_does_not_have_is_refused_with_the_known_fields(export, capsys):
    truth, exp, d = export
    (d / "bad.yaml").write_text(MAPPING.replace("  bm_blast: BM blasts %", "  bm_blasts: BM blasts %"))
    with pytest.raises(EtlError) as e:
        run_etl("aml", [d / "aml.csv"], d / "out", mapping=d / "bad.yaml")
    msg = str(e.value)
    assert "bad.yaml" in msg and "line 6, fields.bm_blasts: AML has no field 'bm_blasts'" in msg
    assert "Known fields: patient_id, age, sex, hb" in msg and "'extra:'" in msg
    # the first mapping format too (a KeyError traceback before)
    (d / "old.yaml").write_text("columns: {hemoglobin: Hb}\n")
    rc = main(["etl", "--use-case", "aml", "--source", str(d / "aml.csv"), "--mapping", str(d / "old.yaml"),
               "--out", str(d / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "line 1, columns.hemoglobin: AML has no field 'hemoglobin'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text,message", [
    ("fields:\n  sex: {column: Sex, codes: {'0': X}}\n",
     "line 2, fields.sex.codes.0: 'X' is not a value of sex; expected F, M or null"),
    ("fields:\n  hb: {any_of: [Hb, WBC]}\n", "line 2, fields.hb.any_of: any_of combines yes/no columns"),
    ("fields:\n  hb: {column: Hb, constant: 3}\n",
     "line 2, fields.hb: needs exactly one of column, any_of, all_of, constant, compute (found column, constant)"),
    ("fields:\n  hb:\n    column: Hb\n    unit: stones\n", "line 4, fields.hb.unit: unit 'stones' is not accepted for hb"),
    ("ignore: [ECOG]\nfields:\n  sex: {colum: Sex}\n", "line 3, fields.sex.colum: unknown key 'colum'"),
    ("fields:\n  anc: {compute: 'open(\"x\")'}\n", "line 2, fields.anc.compute: only numbers, col"),
    ("fields:\n  os_months: {constant: 12}\n", "os_months cannot be a constant"),
    ("ignore: [Hb]\nfields:\n  hb: Hb\n", "column 'Hb' is both ignored and read for hb"),
    ("fields:\n  wbc: {column: NOPE}\n", "line 2, fields.wbc: the mapping reads column 'NOPE' for wbc, but aml.csv has no such column"),
    ("fields: [1, 2]\n", "line 1, fields: expected object, got list"),
])
def test_mapping_errors_name_the_line_and_key(export, text, message):
    truth, exp, d = export
    (d / "m.yaml").write_text(text)
    with pytest.raises(EtlError) as e:
        run_etl("aml", [d / "aml.csv"], d / "out", mapping=d / "m.yaml")
    assert message in str(e.value) and str(d / "m.yaml") in str(e.value)
    assert not (d / "out").exists()


def test_all_of_and_compute(tmp_path):
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "age": [50, 60, 70, 80], "sex": ["F", "M", "F", "M"],
                       "inv3 FISH": [1, 1, 0, ""], "inv3 karyo": [1, 0, 0, 1],
                       "WBC": [10, 4, 2, 8], "Neutro %": [50, 25, "", 10]})
    df.to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        fields:
          inv3: {all_of: [inv3 FISH, inv3 karyo]}
          anc: {compute: 'col("WBC") * col("Neutro %") / 100'}
        """))
    t = run_etl("aml", [tmp_path / "x.csv"], tmp_path / "o", mapping=tmp_path / "m.yaml").table.set_index("patient_id")
    np.testing.assert_array_equal(t.inv3.to_numpy(), [1.0, 0.0, 0.0, np.nan])
    np.testing.assert_allclose(t.anc.to_numpy(), [5.0, 1.0, np.nan, 0.8])
    assert (t.wbc.to_numpy() == [10, 4, 2, 8]).all()  # a column used by compute stays bound too


def test_more_than_5_percent_rejected_exits_2_unless_raised(export, capsys):
    truth, exp, d = export
    exp = exp.astype({"OS (days)": object})
    exp.loc[range(0, N, 10), "OS (days)"] = "soon"      # 20 patients of 200: 10%
    exp.to_csv(d / "aml.csv", index=False, sep=";")
    args = ["etl", "--use-case", "aml", "--source", str(d / "aml.csv"), "--mapping", str(d / "map.yaml"),
            "--out", str(d / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "21 of 200 patients rejected (10.5%), above the limit of 5%" in err
    assert "OS (days): unparseable number 'soon' (20)" in err and not (d / "out").exists()
    assert main(args + ["--max-rejected", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "rejected 21 of 200 patients (10.5%" in out and "1 values set missing" in out
    with pytest.raises(SystemExit) as e:  # a percentage typed for a fraction: argparse refuses it
        main(args + ["--max-rejected", "20"])
    assert e.value.code == 2
    assert "not a fraction between 0 and 1" in capsys.readouterr().err


def test_the_json_schema_agrees_with_jsonschema_when_it_is_installed(export):
    jsonschema = pytest.importorskip("jsonschema")
    from etl.mapping_schema import MAPPING_SCHEMA, validate
    import yaml

    jsonschema.Draft202012Validator.check_schema(MAPPING_SCHEMA)
    v = jsonschema.Draft202012Validator(MAPPING_SCHEMA)
    docs = [yaml.load(MAPPING, Loader=yaml.BaseLoader), {"fields": {"hb": {"column": "a", "constant": "1"}}},
            {"fields": {"hb": {"unit": "g/L"}}}, {"colums": {}}, {"fields": {"hb": "Hb"}},
            {"extra": {"x": {"column": "c", "unit": "u"}}}, {"ignore": "Hb"}, {"version": 3},
            json.loads(json.dumps({"fields": {"sex": {"column": "S", "codes": {"0": None}}}}))]
    for doc in docs:
        assert (not validate(doc)) == v.is_valid(doc), doc


def test_map_check_reports_fields_and_columns_and_writes_a_starting_mapping(export, capsys):
    truth, exp, d = export
    rc = main(["map-check", "--use-case", "aml", "--source", str(d / "aml.csv"), "--mapping", str(d / "map.yaml"),
               "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["refusals"] == [] and res["would_reject"] == 1 and res["values_set_missing"] == 1
    f = {x["field"]: x for x in res["fields"]}
    assert f["hb"]["source"] == "aml.csv:Hb" and "g/L -> g/dL x0.1 (20 rows)" in f["hb"]["conversions"]
    assert f["sex"]["source_values"].startswith(("'0'", "'1'")) and f["sex"]["completeness"] == 1.0
    assert f["t_9_22"]["source"] == "declared: not tested" and f["wbc"]["set_missing"] == 1
    cols = {c["column"]: c["status"] for c in res["source_columns"]}
    assert cols == {**{c: "bound" for c in exp.columns}, "performance_status": "ignored",
                    "MRD_status": "ignored", "Protocol": "extra"}
    assert not (d / "out").exists()  # a dry run writes nothing

    # without a mapping: what would stop the run, and a starting mapping to complete
    sugg = d / "suggested.yaml"
    rc = main(["map-check", "--use-case", "aml", "--source", str(d / "aml.csv"), "--write-mapping", str(sugg)])
    out = capsys.readouterr().out
    assert rc == 1 and "THE ETL WOULD STOP" in out
    assert "unknown gene symbol 'MRD'" in out and "column 'Sex' (sex): 1 value(s) not mapped: '0'" in out
    assert "missing required column patient_id" in out
    text = sugg.read_text()
    assert 'sex: {column: "Sex", codes: {' in text and "TODO" in text and '  - "MRD_status"' in text
    assert main(["map-check", "--use-case", "aml", "--source", str(d / "aml.csv"), "--write-mapping", str(sugg)]) == 2
    assert "exists; not overwritten" in capsys.readouterr().err and sugg.read_text() == text
    # the suggestion refuses to run until its TODOs are answered, then reads the export
    rc = main(["map-check", "--use-case", "aml", "--source", str(d / "aml.csv"), "--mapping", str(sugg)])
    assert rc == 2 and "'TODO' is not a value of sex" in capsys.readouterr().err
    text = text.replace('"0": TODO', '"0": F').replace('"1": TODO', '"1": M').replace(
        "patient_id: TODO", "patient_id: Pat-ID").replace("  # os_event: <column>", "  os_event: Status")
    sugg.write_text(text)
    assert main(["map-check", "--use-case", "aml", "--source", str(d / "aml.csv"), "--mapping", str(sugg)]) == 0
    out = capsys.readouterr().out  # one patient with a negative time: 0.5%, under the 5% limit
    assert "would be rejected: 1" in out and "the ETL would run." in out
    res = run_etl("aml", [d / "aml.csv"], d / "out", mapping=sugg)
    assert len(res.table) == N - 1


def test_fedhaem_node_has_map_check():
    from fl_engine.node.cli import build_parser

    args = build_parser().parse_args(["map-check", "--use-case", "aml", "--source", "x.csv"])
    assert args.func.__name__ == "cmd_map_check"


def test_fhir_input_with_an_out_of_range_value_keeps_the_patient(export):
    truth, exp, d = export
    first = run_etl("aml", [d / "aml.csv"], d / "a", mapping=d / "map.yaml")
    lines = (first.out_dir / "bundles.ndjson").read_text().splitlines()
    b = json.loads(lines[0])
    for e in b["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "718-7":
            r["valueQuantity"]["value"] = 95.0  # g/L written with the g/dL unit
    lines[0] = json.dumps(b)
    (d / "in.ndjson").write_text("\n".join(lines) + "\n")
    res = run_etl("aml", [d / "in.ndjson"], d / "b")
    assert len(res.table) == len(first.table)
    q = res.report["quarantined_values"]
    assert len(q) == 1 and q[0]["column"] == "hb" and q[0]["value"] == "95.0" and q[0]["row"] == 1
    assert res.table.hb.isna().sum() == 1


@pytest.mark.realdata
def test_iwgpm_layout_sets_bad_values_missing_and_keeps_the_patients(iwgpm_dir, tmp_path):
    import shutil
    src = tmp_path / "src"
    src.mkdir()
    clin = pd.read_csv(iwgpm_dir / "df_clinical.tsv", sep="\t", dtype=str, keep_default_na=False).iloc[:60]
    clin.loc[3, "HB"] = "abc"
    clin.loc[7, "WBC"] = "532.7"
    clin.to_csv(src / "df_clinical.tsv", sep="\t", index=False)
    for name in ("df_mut.tsv", "df_cna.tsv", "maf.tsv"):
        shutil.copy(iwgpm_dir / name, src / name)
    res = run_etl("mds", [src], tmp_path / "out")
    assert set(res.table.patient_id) == set(clin.ID) and res.report["rejected"] == []
    q = {(x["patient_id"], x["column"]): x for x in res.report["quarantined_values"]}
    assert "unparseable number" in q[(clin.ID[3], "HB")]["reason"]
    assert "outside [0, 500]" in q[(clin.ID[7], "wbc")]["reason"]
    t = res.table.set_index("patient_id")
    assert np.isnan(t.loc[clin.ID[3], "hb"]) and np.isnan(t.loc[clin.ID[7], "wbc"])


def test_declared_units_and_iso_sex_codes(tmp_path):
    df = pd.DataFrame({"id": ["a", "b", "c"], "age": [50, 60, 70], "Geschl": [1, 2, 2],
                       "Hgb": ["95", "9.1", "120"], "Surv": [365.25, 730.5, 30.4375], "dead": [1, 0, 1]})
    df.to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        fields:
          sex: Geschl
          hb: {column: Hgb, unit: {detect: [g/dL, g/L]}}
          os_months: {column: Surv, unit: d}
          os_event: dead
        """))
    res = run_etl("mds", [tmp_path / "x.csv"], tmp_path / "o", mapping=tmp_path / "m.yaml")
    t = res.table.set_index("patient_id")
    assert list(t.sex) == ["M", "F", "F"]
    np.testing.assert_allclose(t.hb, [9.5, 9.1, 12.0])
    np.testing.assert_allclose(t.os_months, [12.0, 24.0, 1.0])
    assert any("ISO 5218" in w["reason"] for w in res.report["warnings"])
    assert [c["row"] for c in res.report["value_conversions"]] == [2, 4]
