"""Sickle cell disease through the ETL: a registry export (generated teaching cohort written as a
French-speaking centre's CSV, etl.demo_exports) -> validated FHIR R4 bundles -> the ML-ready
table, equal to the cohort it came from; map-check accepts it; a malformed file is refused or
its rows rejected naming file, row and column; the standard codes are well-formed."""
import json

import numpy as np
import pandas as pd
import pytest

from etl.catalogue import LOCAL_SYSTEM, MAPPINGS_DIR, catalogue, load_yaml
from etl.cli import main as etl_main
from etl.demo_exports import SCD_COLUMNS, scd_hospital_export, write_scd_export
from etl.errors import EtlError
from etl.fhir import validate_bundle
from etl.mapcheck import map_check
from etl.pipeline import run_etl
from fedhaem_kernel.schema import SCD
from fl_engine.cohort import generate_scd_cohort

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_scd_cohort(160, seed=11)


@pytest.fixture(scope="module")
def export(cohort, tmp_path_factory):
    return write_scd_export(cohort, tmp_path_factory.mktemp("scd-export"))


@pytest.fixture(scope="module")
def etl_run(export, tmp_path_factory):
    csv, mapping = export
    return run_etl("scd", [csv], tmp_path_factory.mktemp("scd-etl") / "out", mapping=mapping)


def _assert_same_table(table: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal to the cohort up to the export's rounding (Hb to 1 g/L, bilirubin to 0.1 umol/L,
    times to whole days)."""
    t = table.set_index("patient_id").loc[want.patient_id]
    w = want.set_index("patient_id")
    tol = {"hb": 0.051, "bilirubin": 0.01, "os_months": 0.02, "sev_months": 0.02}
    for c in SCD.feature_names + ["os_months", "os_event", "sev_months", "sev_event"]:
        if w[c].dtype == object:
            assert list(t[c].where(t[c].notna(), None)) == list(w[c].where(w[c].notna(), None)), c
        else:
            np.testing.assert_allclose(t[c].astype(float), w[c].astype(float), rtol=0,
                                       atol=tol.get(c, 1e-9), err_msg=c)


def test_registry_export_becomes_valid_fhir_and_the_cohort_table(cohort, etl_run):
    assert len(etl_run.table) == len(cohort) and etl_run.report["rejected"] == []
    _assert_same_table(etl_run.table, cohort)
    assert list(etl_run.table.columns) == (["patient_id"] + SCD.feature_names
                                           + ["os_months", "os_event", "sev_months", "sev_event"])
    lines = (etl_run.out_dir / "bundles.ndjson").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(cohort)
    for line in lines[:40]:
        assert validate_bundle(json.loads(line)) == []


def test_bundles_carry_the_scd_codes(cohort, etl_run):
    by_id = {}
    for line in (etl_run.out_dir / "bundles.ndjson").read_text(encoding="utf-8").splitlines():
        b = json.loads(line)
        pid = next(e["resource"]["identifier"][0]["value"] for e in b["entry"]
                   if e["resource"]["resourceType"] == "Patient")
        by_id[pid] = b
    want_snomed = {"HbSS": "127040003", "HbSC": "35434009", "HbS-beta0-thal": "127043001",
                   "HbS-beta+-thal": "127042006"}
    seen = set()
    for _, row in cohort.dropna(subset=["genotype"]).iterrows():
        res = [e["resource"] for e in by_id[row.patient_id]["entry"]]
        cond = next(r for r in res if r["resourceType"] == "Condition")
        assert cond["code"]["coding"][0]["code"] == "D57" and "onsetAge" not in cond
        geno = next(r for r in res if r["resourceType"] == "Observation"
                    and r["code"]["coding"][0]["code"] == "scd-genotype")
        codings = geno["valueCodeableConcept"]["coding"]
        assert codings[0]["system"] == LOCAL_SYSTEM and codings[0]["display"] == row.genotype
        assert codings[1]["system"] == SNOMED and codings[1]["code"] == want_snomed[row.genotype]
        age = next(r for r in res if r["resourceType"] == "Observation"
                   and r["code"]["coding"][0] == {"system": LOINC, "code": "30525-0", "display": "Age at baseline"})
        assert age["valueQuantity"]["value"] == pytest.approx(row.age)
        hu = [r for r in res if r["resourceType"] == "MedicationStatement"]
        if np.isnan(row.hydroxyurea):  # unknown stays unknown, not "not taken"
            assert hu == []
        else:
            assert hu[0]["medicationCodeableConcept"]["coding"][0]["code"] == "L01XX05"
            assert hu[0]["status"] == ("completed" if row.hydroxyurea == 1 else "not-taken")
        seen.add(row.genotype)
    assert seen == set(want_snomed)


def test_bundles_as_input_reproduce_the_table(etl_run, tmp_path):
    again = run_etl("scd", [etl_run.out_dir / "bundles.ndjson"], tmp_path / "again")
    assert again.report["layout"] == "fhir"
    pd.testing.assert_frame_equal(again.table, etl_run.table)
    assert again.manifest["fingerprint"] == etl_run.manifest["fingerprint"]


def test_map_check_accepts_the_export_and_the_cli_says_the_etl_would_run(export, capsys):
    csv, mapping = export
    result = map_check("scd", [csv], mapping)
    assert result["refusals"] == [] and result["would_reject"] == 0
    bound = {f["field"]: f["source"] for f in result["fields"]}
    assert bound["genotype"].endswith(":" + SCD_COLUMNS["genotype"])
    assert bound["bilirubin"].endswith(":" + SCD_COLUMNS["bilirubin"])
    assert etl_main(["map-check", "--use-case", "scd", "--source", str(csv), "--mapping", str(mapping)]) == 0
    assert "SCD" in capsys.readouterr().out


def test_schema_named_csv_is_read_without_a_mapping(cohort, tmp_path):
    """Column names, genotype spellings and units the catalogue knows need no mapping file."""
    df = cohort.copy()
    df["genotype"] = df["genotype"].map({"HbSS": "SS", "HbSC": "Hb SC", "HbS-beta0-thal": "Sβ0",
                                         "HbS-beta+-thal": "S/beta+"}.get)
    df = df.rename(columns={"hbf": "HbF (%)", "bilirubin": "Bilirubin (mg/dL)", "tcd_velocity": "TAMV",
                            "os_months": "os_days", "voc_per_year": "VOC"})
    df["os_days"] = (df["os_days"] * 365.25 / 12).round(6)
    df.to_csv(tmp_path / "scd.csv", index=False)
    res = run_etl("scd", [tmp_path / "scd.csv"], tmp_path / "o")
    t = res.table.set_index("patient_id").loc[cohort.patient_id]
    assert list(t["genotype"].where(t["genotype"].notna(), None)) == list(cohort["genotype"].where(cohort["genotype"].notna(), None))
    np.testing.assert_allclose(t["os_months"], cohort["os_months"], atol=1e-6)
    np.testing.assert_allclose(t["tcd_velocity"], cohort["tcd_velocity"], atol=1e-9)
    np.testing.assert_allclose(t["bilirubin"], cohort["bilirubin"], atol=1e-9)


def test_a_malformed_row_is_rejected_naming_file_row_and_column(cohort, tmp_path):
    csv, mapping = write_scd_export(cohort, tmp_path)
    lines = csv.read_text(encoding="utf-8").splitlines()
    cells = lines[5].split(";")
    days = list(SCD_COLUMNS).index("os_months")
    cells[days] = "12O4"  # a letter O typed for a zero
    lines[5] = ";".join(cells)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = run_etl("scd", [csv], tmp_path / "out", mapping=mapping)
    assert len(res.table) == len(cohort) - 1
    (rej,) = res.report["rejected"]
    assert rej["file"].endswith("scd_registry.csv") and rej["row"] == 6
    assert rej["column"] == SCD_COLUMNS["os_months"] and "O4" in rej["reason"]  # read as 12 in unit "O4"
    assert rej["patient_id"] == cohort.patient_id.iloc[4]


def test_an_unknown_genotype_code_stops_the_run_naming_file_column_and_value(cohort, tmp_path):
    export = scd_hospital_export(cohort)
    export.loc[3, SCD_COLUMNS["genotype"]] = "SD-Punjab"
    export.loc[7, SCD_COLUMNS["genotype"]] = "SD-Punjab"
    csv, mapping = write_scd_export(cohort, tmp_path)
    export.to_csv(csv, sep=";", index=False)
    with pytest.raises(EtlError) as err:
        run_etl("scd", [csv], tmp_path / "out", mapping=mapping)
    msg = str(err.value)
    assert "scd_registry.csv" in msg and SCD_COLUMNS["genotype"] in msg and "SD-Punjab" in msg
    assert not (tmp_path / "out").exists()  # a failed run writes nothing


def test_a_file_without_the_genotype_column_is_refused(cohort, tmp_path):
    cohort.drop(columns=["genotype"]).to_csv(tmp_path / "scd.csv", index=False)
    with pytest.raises(EtlError) as err:
        run_etl("scd", [tmp_path / "scd.csv"], tmp_path / "out")
    assert "genotype" in str(err.value) and "scd.csv" in str(err.value)


def _loinc_check_digit(body: str) -> int:
    """LOINC's mod-10 check digit of the code's number (LOINC Users' Guide)."""
    digits = body[::-1]
    odd = "".join(digits[0::2])[::-1]
    even = "".join(digits[1::2])[::-1]
    total = sum(int(c) for c in even + str(int(odd) * 2))
    return (10 - total % 10) % 10


_V_D = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_V_P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]


def _verhoeff_ok(number: str) -> bool:
    """SNOMED CT identifiers end in a Verhoeff check digit."""
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = _V_D[c][_V_P[i % 8][int(ch)]]
    return c == 0


def test_check_digit_oracles_on_known_codes():
    assert _loinc_check_digit("718") == 7 and _loinc_check_digit("2532") == 0
    assert _verhoeff_ok("417357006") and not _verhoeff_ok("417357007")


def test_every_standard_code_of_the_catalogue_is_well_formed():
    """Every LOINC code has its check digit and every SNOMED CT id its Verhoeff digit: a typo
    in a code (the commonest mapping error) fails here."""
    base = load_yaml(MAPPINGS_DIR / "features.yaml")
    codes = [spec["code"] for spec in base["fields"].values() if "code" in spec]
    codes += [v.rsplit("|", 1)[0] for spec in base["fields"].values() for v in (spec.get("value_codes") or {}).values()]
    codes += [f["code"] for f in (load_yaml(MAPPINGS_DIR / "scd.yaml").get("fields") or {}).values() if "code" in f]
    checked = 0
    for code in codes:
        system, _, value = code.partition("|")
        value = value.split("|")[0]
        if system == "loinc":
            body, _, digit = value.partition("-")
            assert body.isdigit() and digit.isdigit() and _loinc_check_digit(body) == int(digit), code
            checked += 1
        elif system == "snomed":
            assert value.isdigit() and _verhoeff_ok(value), code
            checked += 1
    assert checked >= 20
    cat = catalogue("scd")
    assert {c for _, c, _ in cat.fields["genotype"].value_codes.values()} == {
        "127040003", "35434009", "127043001", "127042006"}
