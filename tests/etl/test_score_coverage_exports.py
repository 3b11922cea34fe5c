"""An AML registry export as a hospital sends it: rare cytogenetic lesions and ZRSR2 never
exported (declared not tested), karyotype failures, NPM1 not done for some, APL patients,
secondary and therapy-related AML, ECOG with one impossible and one unreadable value. The
declaration reaches the table, the registry and the scores; ELN 2022 is decided where its rules
allow, never against the truth, and counts the patients it could not score."""

import json

import numpy as np
import pandas as pd
import pytest

from etl.pipeline import run_etl
from etl.registry import DatasetRegistry
from etl.table import fingerprint
from fl_engine.node.cli import main as node_main
from fl_engine.scores import eln2022
from fl_engine.scores.aml import APL_REASON, ELN2022_INPUTS
from fl_engine.scores.conventional import conventional_risks, coverage, coverage_report
from fedhaem_kernel.schema import NOT_TESTED_ATTR

N = 240
NOT_EXPORTED = ["t_9_22", "t_8_16", "inv3", "mecom_r", "monosomal"]  # read on the karyotype only
PANEL_LACKS = ["ZRSR2"]
EXPORTED_CYTO = {"t(8;21)": "t_8_21", "inv(16)": "inv16", "t(9;11)": "t_9_11", "t(6;9)": "t_6_9",
                 "KMT2A-r": "kmt2a_r", "-5/del(5q)": "del5q", "-7": "del7_7q", "-17/abn(17p)": "del17_17p",
                 "CK": "complex"}
EXPORTED_GENES = ["NPM1", "FLT3_ITD", "CEBPA_bzip", "TP53", "ASXL1", "BCOR", "EZH2", "RUNX1", "SF3B1",
                  "SRSF2", "STAG2", "U2AF1"]
FREQ = {"t_15_17": 0.04, "t_8_21": 0.05, "inv16": 0.05, "t_9_11": 0.02, "t_6_9": 0.01, "kmt2a_r": 0.03,
        "t_9_22": 0.01, "t_8_16": 0.01, "inv3": 0.01, "mecom_r": 0.01, "del5q": 0.06, "del7_7q": 0.05,
        "del17_17p": 0.05, "complex": 0.12, "monosomal": 0.0, "NPM1": 0.28, "FLT3_ITD": 0.22,
        "CEBPA_bzip": 0.04, "TP53": 0.08}


def truth_table(seed: int = 1) -> pd.DataFrame:
    """Every patient's lesions as they are (what a full work-up would find). The lesions this
    hospital never exports as fields are absent, as its karyotypes would show; ZRSR2, which
    its panel lacks, is sometimes mutated."""
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"patient_id": [f"AML-{i:04d}" for i in range(N)],
                      "age": rng.integers(18, 90, N).astype(float), "sex": rng.choice(["F", "M"], N),
                      "wbc": rng.gamma(1.5, 12, N).round(1), "bm_blast": rng.integers(20, 95, N).astype(float),
                      "ecog": rng.integers(0, 5, N).astype(float),
                      "secondary_aml": (rng.random(N) < 0.12).astype(float),
                      "therapy_related": (rng.random(N) < 0.08).astype(float)})
    for c in ELN2022_INPUTS:
        t[c] = (rng.random(N) < FREQ.get(c, 0.06)).astype(float)
    for c in NOT_EXPORTED:
        t[c] = 0.0
    t["os_months"] = rng.uniform(0.3, 90, N).round(2)
    t["os_event"] = (rng.random(N) < 0.6).astype(float)
    return t


def export(t: pd.DataFrame, genes: list[str] = EXPORTED_GENES) -> pd.DataFrame:
    yn = {1.0: "pos", 0.0: "neg"}
    out = pd.DataFrame({"Pat-ID": t.patient_id, "Age": t.age.astype(int), "Sex": t.sex, "WBC": t.wbc,
                        "BM blasts %": t.bm_blast, "ECOG PS": t.ecog.astype(int).astype(str),
                        "Prior MDS or MDS/MPN": t.secondary_aml.map({1.0: "yes", 0.0: "no"}),
                        "Therapy-related": t.therapy_related.map({1.0: "yes", 0.0: "no"}),
                        "PML-RARA": t.t_15_17.map(yn)})
    for col, field in EXPORTED_CYTO.items():
        out[col] = t[field].map(yn)
    for g in genes:
        out[g.replace("_", " ")] = t[g].map({1.0: "mut", 0.0: "wt"})
    failed = np.arange(N) % 15 == 4  # karyotype failed: no metaphases, every cytogenetic cell empty
    for col in EXPORTED_CYTO:
        out.loc[failed, col] = "no metaphases"
    out.loc[np.arange(N) % 19 == 7, "NPM1"] = "n.d."
    out.loc[5, "ECOG PS"] = "5"      # ECOG 5 is death, no baseline value: out of range
    out.loc[6, "ECOG PS"] = "1-2"    # a range typed in: unreadable
    out["OS (days)"] = (t.os_months * 30.4375).round(3)
    out["Status"] = t.os_event.map({1.0: "dead", 0.0: "alive"})
    return out


def mapping(declare: bool, genes: list[str] = EXPORTED_GENES, panel_lacks: list[str] = PANEL_LACKS) -> str:
    lines = ["use_case: AML", 'missing_values: ["no metaphases", "n.d."]', "fields:", "  patient_id: Pat-ID",
             "  bm_blast: BM blasts %", "  ecog: ECOG PS", "  secondary_aml: Prior MDS or MDS/MPN",
             "  therapy_related: Therapy-related", "  t_15_17: PML-RARA",
             *[f"  {field}: {col!r}" if not col.isidentifier() else f"  {field}: {col}"
               for col, field in EXPORTED_CYTO.items()],
             *[f"  {g}: {g.replace('_', ' ')}" for g in genes],
             "  os_event: {column: Status, codes: {dead: 1, alive: 0}}"]
    if declare:
        lines += [f"  {f}: {{constant: not_tested}}" for f in NOT_EXPORTED + panel_lacks]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("aml_cov")
    t = truth_table()
    export(t).to_csv(d / "aml.csv", index=False, sep=";")
    (d / "declared.yaml").write_text(mapping(True), encoding="utf-8")
    (d / "silent.yaml").write_text(mapping(False), encoding="utf-8")
    declared = run_etl("aml", [d / "aml.csv"], d / "declared", mapping=d / "declared.yaml")
    silent = run_etl("aml", [d / "aml.csv"], d / "silent", mapping=d / "silent.yaml")
    return t, declared, silent, d


@pytest.fixture(scope="module")
def full_panel(runs):
    """The same hospital once ZRSR2 is on its panel."""
    t, _, _, d = runs
    genes = EXPORTED_GENES + PANEL_LACKS
    export(t, genes).to_csv(d / "aml-full.csv", index=False, sep=";")
    (d / "full.yaml").write_text(mapping(True, genes, []), encoding="utf-8")
    return run_etl("aml", [d / "aml-full.csv"], d / "full", mapping=d / "full.yaml")


def test_the_declaration_reaches_the_table_manifest_and_registry(runs, tmp_path):
    t, declared, silent, d = runs
    want = sorted(NOT_EXPORTED + PANEL_LACKS)
    assert declared.table.attrs[NOT_TESTED_ATTR] == want and declared.manifest["not_tested"] == want
    assert NOT_TESTED_ATTR not in silent.table.attrs and silent.manifest["not_tested"] == []
    # the quality report says which fields are empty without a declaration
    assert set(NOT_EXPORTED + PANEL_LACKS) <= set(silent.report["summary"]["empty_undeclared"])
    assert not set(NOT_EXPORTED + PANEL_LACKS) & set(declared.report["summary"]["empty_undeclared"])
    # the same values, declared or not: the declaration is part of what the fingerprint names
    pd.testing.assert_frame_equal(declared.table, silent.table)
    assert declared.manifest["fingerprint"] != silent.manifest["fingerprint"]
    reg = DatasetRegistry(tmp_path / "node")
    entry, _ = reg.register_etl_output("aml", declared.out_dir)
    loaded = reg.load_table("aml", entry.version)
    assert loaded.attrs[NOT_TESTED_ATTR] == want and entry.fingerprint == fingerprint(loaded)
    np.testing.assert_array_equal(conventional_risks(loaded, "AML")["eln2022"],
                                  conventional_risks(declared.table, "AML")["eln2022"])


def test_new_fields_are_read_and_bad_ecog_values_quarantined(runs):
    t, declared, _, d = runs
    tab = declared.table.set_index("patient_id").loc[t.patient_id]
    ok = ~t.index.isin([5, 6])
    np.testing.assert_array_equal(tab.ecog.to_numpy()[ok], t.ecog.to_numpy()[ok])
    assert tab.ecog.iloc[[5, 6]].isna().all()
    q = {x["patient_id"]: x for x in declared.report["quarantined_values"] if x["column"] in ("ecog", "ECOG PS")}
    assert set(q) == {t.patient_id[5], t.patient_id[6]} and q[t.patient_id[5]]["value"] == "5"
    assert "outside [0, 4]" in q[t.patient_id[5]]["reason"] and q[t.patient_id[6]]["value"] == "1-2"
    for c in ("secondary_aml", "therapy_related", "t_15_17"):
        np.testing.assert_array_equal(tab[c].to_numpy(), t[c].to_numpy(), err_msg=c)
    bundles = (declared.out_dir / "bundles.ndjson").read_text()
    assert '"code":"89247-1"' in bundles and '"code":"t_15_17"' in bundles and '"code":"therapy-related"' in bundles


def _could_differ(row: dict, unknown: list[str]) -> bool:
    """True when two values of the unknown lesions give two ELN 2022 results: every unknown
    absent, then each one present alone (enough to move a group in ELN 2022's rule order)."""
    base = {**row, **{c: 0.0 for c in unknown}}
    first = eln2022(base)["eln2022_cat"]
    return any(eln2022({**base, c: 1.0})["eln2022_cat"] != first for c in unknown)


def test_eln2022_is_decided_where_the_rules_allow_and_never_against_the_truth(runs):
    t, declared, _, d = runs
    tab = declared.table.set_index("patient_id").loc[t.patient_id].reset_index()
    tab.attrs = declared.table.attrs
    out = eln2022(tab)
    truth = eln2022(t)
    apl = t.t_15_17.to_numpy() == 1
    # APL: not scored, with the reason, exactly the APL patients
    np.testing.assert_array_equal(out["eln2022_excluded"].astype(bool).to_numpy(), apl)
    decided = out["eln2022_cat"].notna().to_numpy()
    assert not (decided & apl).any()
    # a decided group is the group of the full work-up: a declared lesion read as absent, an
    # untested gene that could not matter, never moved a patient
    assert (out["eln2022_cat"][decided] == truth["eln2022_cat"][decided]).all()
    # an undecided patient is undecided because a value we lack could change the group
    undecided = np.flatnonzero(~decided & ~apl)
    assert len(undecided) > 0
    for i in undecided:
        row = {c: tab.at[i, c] for c in ELN2022_INPUTS}
        unknown = [c for c in ELN2022_INPUTS if pd.isna(row[c]) and c not in NOT_EXPORTED]
        read_absent = [c for c in NOT_EXPORTED if pd.notna(row["complex"])]
        row.update({c: 0.0 for c in read_absent})
        row.update({c: np.nan for c in NOT_EXPORTED if c not in read_absent})
        unknown += [c for c in NOT_EXPORTED if c not in read_absent]
        assert _could_differ(row, unknown), (i, out.iloc[i].to_dict())
    # secondary / therapy-related AML are scored and said so
    qual = ((t.secondary_aml == 1) | (t.therapy_related == 1)).to_numpy() & ~apl
    np.testing.assert_array_equal(out["eln2022_note"].str.contains("scored on genetics").to_numpy(), qual)
    # the coverage the comparison reads
    cov = coverage(conventional_risks(tab, "AML"))["eln2022"]
    assert (cov["n"], cov["of"]) == (int(decided.sum()), N)


def test_without_the_declaration_the_missing_lesions_are_counted_not_silent(runs, full_panel):
    t, declared, silent, d = runs
    with_decl = coverage_report(declared.table, "AML", top=20)["eln2022"]
    without = coverage_report(silent.table, "AML")["eln2022"]
    assert without["n"] < with_decl["n"] and not without["sufficient"]
    assert any(f"missing {c}" in " ".join(without["reasons"]) for c in NOT_EXPORTED)
    # declared: what is still undecided is named: the gene the panel lacks (ELN 2022 requires
    # it: never taken as absent), NPM1 not done, the lesions of failed karyotypes
    reasons = with_decl["reasons"]
    assert reasons.get("missing ZRSR2 (not tested)", 0) > 0 and reasons.get("missing NPM1", 0) > 0
    apl = int((t.t_15_17 == 1).sum())
    assert reasons[f"excluded: {APL_REASON}"] == apl
    # with ZRSR2 on the panel the same hospital's ELN 2022 reaches the 80 % a comparison needs
    full = coverage_report(full_panel.table, "AML")["eln2022"]
    assert full["n"] > with_decl["n"] and full["sufficient"] and not with_decl["sufficient"]
    assert "missing ZRSR2 (not tested)" not in full["reasons"]


def test_fhir_bundles_of_the_new_fields_read_back(runs, tmp_path):
    t, declared, _, d = runs
    back = run_etl("aml", [declared.out_dir / "bundles.ndjson"], tmp_path / "back")
    cols = ["ecog", "secondary_aml", "therapy_related", "t_15_17"]
    pd.testing.assert_frame_equal(back.table[cols], declared.table[cols])
    # the declaration travels in the bundles (dataAbsentReason not-performed) and comes back
    assert back.table.attrs[NOT_TESTED_ATTR] == declared.table.attrs[NOT_TESTED_ATTR]
    assert back.manifest["fingerprint"] == declared.manifest["fingerprint"]
    assert '"code":"not-performed"' in (declared.out_dir / "bundles.ndjson").read_text()



def test_the_node_prints_score_coverage_of_its_etl_output(runs, capsys):
    t, declared, silent, d = runs
    assert node_main(["scores", "--dataset", str(declared.out_dir), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = coverage_report(declared.table, "AML", top=8)["eln2022"]
    assert got["not_tested"] == sorted(NOT_EXPORTED + PANEL_LACKS)
    assert (got["scores"]["eln2022"]["n"], got["scores"]["eln2022"]["of"]) == (want["n"], N)
    assert node_main(["scores", "--dataset", str(silent.out_dir)]) == 0
    text = capsys.readouterr().out
    n = coverage_report(silent.table, "AML")["eln2022"]["n"]
    assert f"ELN 2022: computable on {n} of {N} patients" in text and "a study would not compare it" in text
    assert "missing t_9_22" in text or "missing t_8_16" in text
    assert node_main(["scores", "--dataset", str(d)]) == 2
    assert "not an ETL output folder" in capsys.readouterr().err
