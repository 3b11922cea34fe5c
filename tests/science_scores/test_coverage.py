"""Scores say what they covered: lesions declared never tested read by each score's rules
(ELN 2022 per lesion, IPSS-M scenarios), APL outside ELN 2022, diagnostic qualifiers noted, and
the coverage counts and sentences the comparison uses."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from fl_engine.scores import eln2022, ipssm
from fl_engine.scores.aml import (ADVERSE_CYTOGENETICS, APL_REASON, ELN2022_INPUTS, GENE_LESIONS, KARYOTYPE_LESIONS,
                                  MYELODYSPLASIA_GENES)
from fl_engine.scores.conventional import (COVERAGE_MIN, conventional_groups, conventional_risks, coverage,
                                           coverage_report, coverage_text, pooled_coverage)
from fl_engine.scores.mds import IPSSM_INPUTS, IPSSM_RESIDUAL_GENES
from fedhaem_kernel.schema import NOT_TESTED_ATTR

NA = np.nan


def aml(**kw):
    p = {c: 0 for c in ELN2022_INPUTS}
    p.update(kw)
    return p


@pytest.mark.parametrize("lesion", [c for c in KARYOTYPE_LESIONS if c != "t_15_17"])
def test_a_declared_cytogenetic_lesion_is_absent_on_a_read_karyotype_and_unknown_without(lesion):
    # NPM1 without FLT3-ITD is favourable unless an adverse cytogenetic lesion is present: the
    # lesion decides, so it must be known or read as absent
    row = aml(NPM1=1, **{lesion: NA})
    assert eln2022(row)["eln2022_cat"] is None  # an empty cell is unknown
    out = eln2022(row, not_tested=[lesion])
    assert out["eln2022_cat"] == eln2022(aml(NPM1=1))["eln2022_cat"] == "Favorable"
    assert lesion in out["eln2022_note"] and "taken as absent" in out["eln2022_note"]
    no_karyotype = eln2022(aml(NPM1=1, complex=NA, **{lesion: NA}), not_tested=[lesion])
    # the first rule the unknowns stop names them: CBF, then adverse cytogenetics with complex
    missing = no_karyotype["eln2022_missing"]
    assert no_karyotype["eln2022_cat"] is None and missing
    if lesion in ADVERSE_CYTOGENETICS + ("t_8_21", "inv16"):
        assert f"{lesion} (not tested)" in missing
    if lesion not in ("t_8_21", "inv16"):
        assert "complex" in missing


@pytest.mark.parametrize("gene", GENE_LESIONS)
def test_a_declared_gene_is_never_taken_as_absent(gene):
    # wild-type everything: intermediate only if no MR gene, TP53, NPM1, CEBPA is mutated
    out = eln2022(aml(**{gene: NA}), not_tested=[gene])
    if gene == "FLT3_ITD":  # FLT3-ITD cannot move a patient without NPM1 out of intermediate
        assert out["eln2022_cat"] == "Intermediate"
    else:
        assert out["eln2022_cat"] is None and f"{gene} (not tested)" in out["eln2022_missing"]
    # where it cannot change the group the patient is still scored
    assert eln2022(aml(inv16=1, **{gene: NA}), not_tested=[gene])["eln2022_cat"] == "Favorable"
    assert eln2022(aml(del7_7q=1, **{gene: NA}), not_tested=[gene])["eln2022_cat"] == "Adverse"


def test_a_declared_column_is_not_read_even_if_a_cell_holds_a_value():
    # the hospital says it never tests ZRSR2; a stray 0 does not make the patient intermediate
    assert eln2022(aml(ZRSR2=0), not_tested=["ZRSR2"])["eln2022_cat"] is None


def test_the_declaration_travels_as_the_table_attribute():
    df = pd.DataFrame([aml(NPM1=1, mecom_r=NA), aml(mecom_r=NA, SRSF2=1)])
    assert eln2022(df)["eln2022_cat"].isna().all()
    df.attrs[NOT_TESTED_ATTR] = ["mecom_r"]
    assert list(eln2022(df)["eln2022_cat"]) == ["Favorable", "Adverse"]
    assert list(eln2022(df, not_tested=[])["eln2022_cat"].isna()) == [True, True]  # argument wins
    with pytest.raises(TypeError, match="list of field names"):
        eln2022(df, not_tested="mecom_r")


@pytest.mark.parametrize("others", [{}, {"t_8_21": 1}, {"NPM1": 1}, {"complex": 1, "TP53": 1}])
def test_apl_is_not_scored_by_eln2022_and_says_why(others):
    out = eln2022(aml(t_15_17=1, **others))
    assert out["eln2022_cat"] is None and out["eln2022_excluded"] == APL_REASON
    assert out["eln2022_missing"] == "" and "APL" in out["eln2022_rule"]
    assert np.isnan(conventional_risks(pd.DataFrame([aml(t_15_17=1, **others)]), "AML")["eln2022"][0])
    # unknown PML::RARA: APL cannot be ruled out
    assert eln2022(aml(t_15_17=NA))["eln2022_missing"] == "missing: t_15_17"


@pytest.mark.parametrize("qualifier", ["secondary_aml", "therapy_related"])
@pytest.mark.parametrize("lesions, cat", [({}, "Intermediate"), ({"SRSF2": 1}, "Adverse"),
                                          ({"NPM1": 1}, "Favorable"), ({"t_8_21": 1}, "Favorable")])
def test_secondary_and_therapy_related_aml_are_scored_on_genetics(qualifier, lesions, cat):
    out = eln2022({**aml(**lesions), qualifier: 1})
    assert out["eln2022_cat"] == cat == eln2022(aml(**lesions))["eln2022_cat"]
    assert "scored on genetics" in out["eln2022_note"]
    assert eln2022({**aml(**lesions), qualifier: 0})["eln2022_note"] == ""


def _risks(values):
    return {"s": np.array(values, dtype=float)}


@given(st.lists(st.one_of(st.just(np.nan), st.floats(-5, 5)), min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_coverage_counts_the_non_missing_values(values):
    c = coverage(_risks(values))["s"]
    assert c["n"] == sum(not np.isnan(v) for v in values) and c["of"] == len(values)
    assert c["fraction"] == pytest.approx(c["n"] / c["of"])
    assert c["sufficient"] == (c["n"] >= COVERAGE_MIN * c["of"] - 1e-12)


def test_coverage_threshold_and_sentences():
    assert coverage(_risks([1, 2, 3, 4, np.nan]))["s"]["sufficient"]          # 80 %: compared
    assert not coverage(_risks([1, 2, 3, np.nan]))["s"]["sufficient"]         # 75 %: not
    assert not coverage({"s": np.array([])})["s"]["sufficient"]
    assert coverage_text("ipss_m", 143, 154, 0.7104) == "IPSS-M C 0.710 on 143 of 154 test patients"
    refusal = coverage_text("eln2022", 51, 154, 0.658)
    assert refusal == ("ELN 2022: not compared: computable on 51 of 154 test patients (33%), under the 80% "
                       "a comparison needs") and "0.658" not in refusal


def test_pooled_coverage_over_hospitals():
    per_node = {"A": {"n_holdout": 40, "ipss_m_n": 38, "ipss_r_n": 20},
                "B": {"n_holdout": 30, "ipss_m_n": 30, "ipss_r_suppressed": 1},
                "C": {"n_holdout": 10}}
    cov = pooled_coverage(per_node)
    assert cov["ipss_m"] == {"n": 68, "of": 70, "fraction": 68 / 70, "sufficient": True, "suppressed_nodes": 0}
    assert cov["ipss_r"]["n"] == 20 and cov["ipss_r"]["of"] == 70 and cov["ipss_r"]["suppressed_nodes"] == 1
    assert not cov["ipss_r"]["sufficient"] and "eln2022" not in cov


def _mds_row(**kw):
    p = {c: 0.0 for c in IPSSM_INPUTS}
    p.update(hb=9.0, plt=120.0, bm_blast=3.0, cyto_ipssr="Good", tp53_count=0.0, tp53_maxvaf=0.0, anc=2.0)
    p.update(kw)
    return p


def test_ipssm_risk_follows_the_authors_scenario_rule():
    rng = np.random.default_rng(5)
    rows = []
    for i in range(200):
        r = _mds_row(hb=float(rng.uniform(6, 14)), bm_blast=float(rng.uniform(0, 18)))
        for g in rng.choice(list(IPSSM_RESIDUAL_GENES) + ["TP53", "ASXL1", "SF3B1", "NPM1"], rng.integers(0, 12),
                            replace=False):
            r[g] = NA  # genes not tested for this patient
        if i % 7 == 0:
            r["hb"] = NA
        rows.append(r)
    df = pd.DataFrame(rows)
    out = ipssm(df)
    risk = conventional_risks(df, "MDS")["ipss_m"]
    accepted = out["ipssm_cat"].notna().to_numpy()
    assert 0 < accepted.sum() < len(df)  # the cohort holds both kinds
    np.testing.assert_array_equal(np.isnan(risk), ~accepted)
    np.testing.assert_allclose(risk[accepted], out["ipssm_score_mean"].to_numpy(float)[accepted])
    spread = (out["ipssm_score_worst"] - out["ipssm_score_best"]).to_numpy()
    # accepted: worst - best within 1, or the same category in the best and worst scenarios
    stable = (out["ipssm_cat_best"] == out["ipssm_cat_worst"]).to_numpy()
    np.testing.assert_array_equal(accepted, (spread <= 1.0) | stable)
    rep = coverage_report(df, "MDS")["ipss_m"]
    assert rep["n"] == accepted.sum() and rep["spread"]["above_limit"] == int((spread > 1).sum())
    assert rep["spread"]["none"] == int((spread == 0).sum())
    # the groups on the curves are the same patients' categories
    groups = conventional_groups(df, "MDS")["ipss_m"]
    np.testing.assert_array_equal(groups >= 0, accepted)


def test_coverage_report_names_the_missing_inputs():
    df = pd.DataFrame([aml(NPM1=1, FLT3_ITD=NA), aml(ZRSR2=NA), aml(ZRSR2=NA), aml(t_15_17=1), aml(del5q=1)])
    rep = coverage_report(df, "AML", not_tested=["ZRSR2"])["eln2022"]
    assert (rep["n"], rep["of"]) == (1, 5)
    assert rep["reasons"] == {"missing ZRSR2 (not tested)": 2, "missing FLT3_ITD": 1, f"excluded: {APL_REASON}": 1}


def test_every_eln_input_is_either_a_karyotype_lesion_or_a_gene():
    assert set(ELN2022_INPUTS) - {"complex"} == set(KARYOTYPE_LESIONS) | set(GENE_LESIONS)
    assert set(MYELODYSPLASIA_GENES) <= set(GENE_LESIONS)


def test_point_scores_count_a_patient_only_when_the_missing_input_cannot_matter():
    # R-ISS without iFISH (not tested): ISS II patients are R-ISS II whatever it shows; ISS I
    # and III patients cannot be staged; CPSS-Mol without SETBP1: decided when the genetic
    # group is already high
    mm = pd.DataFrame({"b2m": [2.0, 4.0, 6.0, 2.0], "albumin": [4.0, 4.0, 4.0, 4.0], "ldh": [150.0] * 4,
                       "ldh_uln": [250.0] * 4, "del17p": [NA, NA, NA, 0.0], "t_4_14": [NA, NA, NA, 0.0],
                       "t_14_16": [NA, NA, NA, 0.0]})
    risks = conventional_risks(mm, "MM", not_tested=["del17p", "t_4_14", "t_14_16"])
    np.testing.assert_array_equal(np.isnan(risks["riss"]), [True, False, True, False])
    assert coverage(risks)["riss"]["n"] == 2 and coverage(risks)["iss"]["n"] == 4
    cmml = pd.DataFrame({"who_cmml": ["CMML-1"] * 2, "bm_blast": [3.0, 3.0], "pb_blast": [1.0, 1.0],
                         "wbc": [8.0, 8.0], "cyto_cpss": ["High", "Low"], "rbc_transfusion": [0.0, 0.0],
                         "ASXL1": [1.0, 0.0], "NRAS": [0.0, 0.0], "RUNX1": [0.0, 0.0], "SETBP1": [NA, NA]})
    c = coverage(conventional_risks(cmml, "CMML"))
    assert (c["cpss"]["n"], c["cpss_mol"]["n"]) == (2, 1)
