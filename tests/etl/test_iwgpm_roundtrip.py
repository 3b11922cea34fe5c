"""IWG-PM -> FHIR -> table reproduces every value it maps (oracle: pandas on the raw TSVs)."""
import json

import numpy as np
import pandas as pd
import pytest

from fedhaem_kernel.schema import MDS

pytestmark = pytest.mark.realdata

CYTO = {"Very-Good": "Very Good", "Good": "Good", "Int": "Intermediate", "Poor": "Poor",
        "Very-Poor": "Very Poor"}


def _expected(d):
    clin = pd.read_csv(d / "df_clinical.tsv", sep="\t").set_index("ID")
    mut = pd.read_csv(d / "df_mut.tsv", sep="\t").set_index("ID")
    cna = pd.read_csv(d / "df_cna.tsv", sep="\t").set_index("ID")
    maf = pd.read_csv(d / "maf.tsv", sep="\t")
    if MDS.feature("age").required:  # then rows without age are rejected
        clin = clin[clin["AGE"].notna()]
    e = pd.DataFrame(index=clin.index)
    for col, src in [("age", "AGE"), ("hb", "HB"), ("plt", "PLT"), ("anc", "ANC"), ("wbc", "WBC"),
                     ("monocytes", "MONOCYTES"), ("bm_blast", "BM_BLAST"), ("pb_blast", "PB_BLAST"),
                     ("ring_sideroblasts", "RINGED_SIDEROBLASTS"), ("hma", "hma"),
                     ("lenalidomide", "lenalidomid"), ("transplant", "transplant")]:
        e[col] = clin[src].astype(float)
    e["sex"] = clin["SEX"]
    e["cyto_ipssr"] = clin["CYTO_IPSSR"].map(CYTO)
    e["complex"] = (clin["complex"] == "complex").astype(float)
    e["tp53_loh"] = clin["chr17"].isin(["del", "cnloh"]).astype(float)
    c = cna.reindex(e.index)
    e["del5q"] = c["del5q"].astype(float)
    e["del7_7q"] = (c["del7"] | c["del7q"]).astype(float)
    e["del17_17p"] = (c["del17"] | c["del17p"]).astype(float)
    e["del20q"] = c["del20q"].astype(float)
    e["plus8"] = c["plus8"].astype(float)
    m = mut.reindex(e.index)
    for g in MDS.group("genomic"):
        if g in ("tp53_count", "tp53_maxvaf", "tp53_loh"):
            continue
        if g == "FLT3":
            e[g] = (m["FLT3"].astype(bool) | m["FLT3_ITD"].astype(bool)).astype(float)
        else:
            e[g] = m[g].astype(float)
    tp = maf[maf.GENE == "TP53"].groupby("ID").VAF.agg(["size", "max"])
    e["tp53_count"] = tp["size"].reindex(e.index).fillna(0).astype(float)
    e["tp53_maxvaf"] = tp["max"].reindex(e.index).fillna(0).astype(float)
    for ep, src in [("os", "OS"), ("lfs", "LFS"), ("amlt", "AMLt")]:
        e[f"{ep}_months"] = clin[f"{src}_YEARS"] * 12
        e[f"{ep}_event"] = clin[f"{src}_STATUS"].where(clin[f"{src}_YEARS"].notna())
    return e, maf


def test_round_trip_reproduces_every_mapped_value(iwgpm_etl, iwgpm_dir):
    expected, _ = _expected(iwgpm_dir)
    table = iwgpm_etl.table.set_index("patient_id")
    assert sorted(table.index) == sorted(expected.index)
    table = table.loc[expected.index]
    for col in expected.columns:
        got, want = table[col], expected[col]
        if want.dtype == object:
            assert (got.fillna("<NA>") == want.fillna("<NA>")).all(), col
        else:
            np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-12,
                                       equal_nan=True, err_msg=col)


def test_table_holds_every_patient_not_rejected(iwgpm_etl, iwgpm_dir):
    clin = pd.read_csv(iwgpm_dir / "df_clinical.tsv", sep="\t")
    rep = iwgpm_etl.report
    rejected = {r["patient_id"] for r in rep["rejected"]}
    assert all(r["reason"] and r["file"] and r["row"] for r in rep["rejected"])
    assert set(iwgpm_etl.table.patient_id) | rejected == set(clin.ID)
    assert not set(iwgpm_etl.table.patient_id) & rejected
    want = set(clin.ID[clin.AGE.isna()]) if MDS.feature("age").required else set()
    assert rejected == want


def test_variants_keep_gene_hgvs_and_vaf(iwgpm_etl, iwgpm_dir):
    _, maf = _expected(iwgpm_dir)
    from etl.catalogue import gene_table
    got = []
    with open(iwgpm_etl.out_dir / "bundles.ndjson") as fh:
        for line in fh:
            b = json.loads(line)
            pid = next(e["resource"]["identifier"][0]["value"] for e in b["entry"]
                       if e["resource"]["resourceType"] == "Patient")
            for e in b["entry"]:
                r = e["resource"]
                if r["code"]["coding"][0].get("code") == "69548-6" if "code" in r else False:
                    comp = {c["code"]["coding"][0]["code"]: c for c in r["component"]}
                    gene = comp["48018-6"]["valueCodeableConcept"]["coding"][0]["code"]
                    p = comp.get("48005-3", {}).get("valueCodeableConcept", {}).get("coding", [{}])[0].get("code")
                    vaf = comp.get("81258-6", {}).get("valueQuantity", {}).get("value")
                    got.append((pid, gene, p, vaf))
    kept = set(iwgpm_etl.table.patient_id)
    want = maf[maf.ID.isin(kept)]
    resolve = gene_table().resolve
    want_set = {(r.ID, resolve(r.GENE), None if pd.isna(r.PROTEIN_CHANGE) else r.PROTEIN_CHANGE,
                 None if pd.isna(r.VAF) else float(r.VAF)) for r in want.itertuples()}
    assert want_set <= set(got)
    assert len([g for g in got if g[2] is not None or g[3] is not None]) >= len(want) - 5


def test_bundles_validate_and_outputs_exist(iwgpm_etl):
    from etl.fhir import validate_bundle
    out = iwgpm_etl.out_dir
    for name in ("table.parquet", "table.csv", "quality.json", "quality.html", "manifest.json",
                 "quarantine.csv"):
        assert (out / name).exists(), name
    with open(out / "bundles.ndjson") as fh:
        lines = fh.readlines()
    assert len(lines) == len(iwgpm_etl.table)
    for line in lines[:50]:
        assert validate_bundle(json.loads(line)) == []
    q = json.loads((out / "quality.json").read_text())
    assert q["summary"]["patients"] == len(iwgpm_etl.table)
    assert any(c["column"] == "os_months" and c["factor"] == 12 for c in q["unit_conversions"])
    pq = pd.read_parquet(out / "table.parquet")
    pd.testing.assert_frame_equal(pq, iwgpm_etl.table)
