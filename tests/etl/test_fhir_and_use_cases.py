"""FHIR bundles: valid per fhir.resources (R4B), readable back, accepted as input; every use
case's mapping builds valid bundles and reads generic CSVs."""
import copy
import json

import numpy as np
import pandas as pd
import pytest

from etl.catalogue import catalogue
from etl.fhir import build_bundle, validate_bundle
from etl.pipeline import run_etl
from etl.records import PatientRecord, Variant
from fedhaem_kernel.schema import SCHEMAS

from .synth import canonical_cohort


def test_fhir_bundles_as_input_reproduce_the_table(tmp_path):
    canonical_cohort(n=30, seed=21).to_csv(tmp_path / "h.csv", index=False)
    first = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "a")
    second = run_etl("mds", [first.out_dir / "bundles.ndjson"], tmp_path / "b")
    assert second.report["layout"] == "fhir"
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.manifest["fingerprint"] == second.manifest["fingerprint"]


def test_invalid_bundles_are_rejected_with_line_and_reason(tmp_path):
    canonical_cohort(n=5, seed=22).to_csv(tmp_path / "h.csv", index=False)
    first = run_etl("mds", [tmp_path / "h.csv"], tmp_path / "a")
    lines = (first.out_dir / "bundles.ndjson").read_text().splitlines()
    bad = json.loads(lines[1])
    obs = next(e["resource"] for e in bad["entry"] if e["resource"]["resourceType"] == "Observation")
    obs["status"] = "bogus"
    bad2 = json.loads(lines[2])
    bad2["entry"][1]["resource"]["valueQuantity"] = {"value": "abc"}
    lines[1], lines[2] = json.dumps(bad), json.dumps(bad2)
    lines.append("{not json")
    (tmp_path / "in.ndjson").write_text("\n".join(lines) + "\n")
    res = run_etl("mds", [tmp_path / "in.ndjson"], tmp_path / "b")
    assert len(res.table) == 3
    rej = sorted((r["row"], r["reason"]) for r in res.report["rejected"])
    assert rej[0][0] == 2 and "status" in rej[0][1] and "bogus" in rej[0][1]
    assert rej[1][0] == 3 and "invalid FHIR" in rej[1][1]
    assert rej[2][0] == 6 and "not JSON" in rej[2][1]


def test_external_fhir_units_are_converted(tmp_path):
    cat = catalogue("mds")
    rec = PatientRecord("X1", values={"age": 70.0, "hb": 9.5, "sex": "F"}, endpoints={"os": (24.0, 1)})
    b = build_bundle(rec, cat)
    for e in b["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "718-7":
            r["valueQuantity"] = {"value": 95.0, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}
        if r["code"]["coding"][0]["code"] == "endpoint-os" if "code" in r else False:
            r["valueQuantity"] = {"value": 2.0, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}
    (tmp_path / "ext.ndjson").write_text(json.dumps(b) + "\n")
    res = run_etl("mds", [tmp_path / "ext.ndjson"], tmp_path / "o")
    row = res.table.iloc[0]
    assert row.hb == pytest.approx(9.5) and row.os_months == pytest.approx(24.0) and row.os_event == 1
    assert {c["column"] for c in res.report["unit_conversions"]} == {"hb", "os_months"}


def _full_record(use_case: str, rng) -> PatientRecord:
    cat = catalogue(use_case)
    s = cat.schema
    rec = PatientRecord(f"{use_case}-1", who_class=None if cat.who_class_column else "X",
                        karyotype="46,XY")
    for f in s.features:
        spec = cat.fields.get(f.name)
        kind = spec.fhir if spec else ""
        if kind.startswith("variant"):
            continue
        if f.kind == "numeric":
            rec.values[f.name] = float(rng.uniform(f.minimum, min(f.maximum, 50)))
        elif f.kind == "binary":
            rec.values[f.name] = int(rng.integers(0, 2))
        elif f.categories:
            rec.values[f.name] = f.categories[0]
    rec.genes_studied = sorted({cat.genes.resolve(g) or cat.genes.variant_classes[g][0]
                                for g in s.group("genomic") if g not in ("tp53_count", "tp53_maxvaf", "tp53_loh")})
    rec.variants = [Variant("TP53", "c.743G>A", "p.R248Q", 0.41, "Sub"), Variant("TP53", vaf=0.12)]
    rec.endpoints = {e.name: (12.5, 1) for e in s.endpoints}
    rec.embeddings = {"wsi": [0.1, -2.5, 3.25e-05]}
    return rec


@pytest.mark.parametrize("use_case", sorted(SCHEMAS))
def test_every_use_case_builds_valid_bundles_and_reads_back(use_case):
    from etl.features import bundle_to_row
    rng = np.random.default_rng(0)
    cat = catalogue(use_case)
    rec = _full_record(use_case, rng)
    b = build_bundle(rec, cat)
    assert validate_bundle(b) == []
    row = bundle_to_row(copy.deepcopy(b), cat)
    for name, v in rec.values.items():
        want = v if isinstance(v, str) else float(v)
        assert row[name] == pytest.approx(want) if not isinstance(v, str) else row[name] == want, name
    if "TP53" in cat.schema.feature_names:
        assert row["TP53"] == 1.0
    for e in cat.schema.endpoints:
        assert row[e.time_column] == 12.5 and row[e.event_column] == 1.0
    assert [row[f"wsi_{i}"] for i in range(3)] == [0.1, -2.5, 3.25e-05]
    if "tp53_count" in cat.schema.feature_names:
        assert row["tp53_count"] == 2 and row["tp53_maxvaf"] == pytest.approx(0.41)
    others = [g for g in cat.schema.group("genomic") if g not in ("TP53", "tp53_count", "tp53_maxvaf", "tp53_loh")]
    assert all(row[g] == 0.0 for g in others)
    if cat.who_class_column:
        assert row[cat.who_class_column] == rec.values[cat.who_class_column]


def test_generic_csv_for_aml_and_cmml(tmp_path):
    rng = np.random.default_rng(5)
    n = 12
    aml = pd.DataFrame({"patient_id": [f"A{i}" for i in range(n)], "age": rng.integers(20, 80, n),
                        "sex": rng.choice(["M", "F"], n), "t(8;21)": rng.integers(0, 2, n),
                        "FLT3_ITD": rng.integers(0, 2, n), "NPM1": rng.integers(0, 2, n),
                        "EFS (months)": rng.uniform(1, 40, n), "efs_status": rng.integers(0, 2, n)})
    aml.to_csv(tmp_path / "aml.csv", index=False)
    t = run_etl("aml", [tmp_path / "aml.csv"], tmp_path / "oa").table.set_index("patient_id").loc[aml.patient_id]
    assert list(t.t_8_21) == list(aml["t(8;21)"].astype(float))
    assert list(t.FLT3_ITD) == list(aml.FLT3_ITD.astype(float)) and list(t.NPM1) == list(aml.NPM1.astype(float))
    np.testing.assert_allclose(t.efs_months, aml["EFS (months)"])
    cm = pd.DataFrame({"patient_id": [f"C{i}" for i in range(n)], "age": rng.integers(50, 90, n),
                       "sex": rng.choice(["M", "F"], n), "monocytes": rng.uniform(1, 20, n).round(2),
                       "who_cmml": rng.choice(["CMML-0", "cmml1", "CMML 2"], n)})
    cm.to_csv(tmp_path / "cmml.csv", index=False)
    t = run_etl("cmml", [tmp_path / "cmml.csv"], tmp_path / "oc").table.set_index("patient_id").loc[cm.patient_id]
    want = cm.who_cmml.map({"CMML-0": "CMML-0", "cmml1": "CMML-1", "CMML 2": "CMML-2"})
    assert list(t.who_cmml) == list(want)
    cm.drop(columns=["monocytes"]).to_csv(tmp_path / "cmml2.csv", index=False)
    from etl.errors import EtlError
    with pytest.raises(EtlError, match="missing required column monocytes"):
        run_etl("cmml", [tmp_path / "cmml2.csv"], tmp_path / "oc2")


def test_aml_t_8_16_and_mecom_r_reach_fhir_and_the_table(tmp_path):
    # ELN 2022 adverse lesions: source headers as hospitals write them, yes/no/blank cells
    src = pd.DataFrame({"patient_id": ["A1", "A2", "A3", "A4"], "age": [40, 55, 61, 70],
                        "sex": ["F", "M", "F", "M"], "t(8;16)": ["yes", "no", "", "no"],
                        "EVI1 rearranged": ["no", "yes", "no", ""]})
    src.to_csv(tmp_path / "aml.csv", index=False)
    first = run_etl("aml", [tmp_path / "aml.csv"], tmp_path / "a")
    t = first.table.set_index("patient_id")
    np.testing.assert_array_equal(t.loc[["A1", "A2", "A3", "A4"], "t_8_16"], [1.0, 0.0, np.nan, 0.0])
    np.testing.assert_array_equal(t.loc[["A1", "A2", "A3", "A4"], "mecom_r"], [0.0, 1.0, 0.0, np.nan])
    line = (first.out_dir / "bundles.ndjson").read_text().splitlines()[0]
    karyo = next(e["resource"] for e in json.loads(line)["entry"]
                 if e["resource"].get("code", {}).get("coding", [{}])[0].get("code") == "karyotype")
    comps = {c["code"]["coding"][0]["code"]: (c["code"]["coding"][0]["system"], c["valueBoolean"])
             for c in karyo["component"]}
    assert comps["t_8_16"] == ("urn:fedhaem:code", True)
    assert comps["mecom_r"] == ("urn:fedhaem:code", False)
    second = run_etl("aml", [first.out_dir / "bundles.ndjson"], tmp_path / "b")
    pd.testing.assert_frame_equal(first.table, second.table)
