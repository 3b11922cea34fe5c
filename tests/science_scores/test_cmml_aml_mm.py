"""CPSS, CPSS-Mol, ELN 2022, ISS and R-ISS on hand-worked cases from the papers' rules."""
import numpy as np
import pandas as pd
import pytest

from fl_engine.scores import cpss, cpss_mol, eln2022, iss, riss
from fl_engine.scores.aml import ELN2022_INPUTS

NA = np.nan


def cmml(**kw):
    p = {"who_cmml": "CMML-1", "bm_blast": 3.0, "pb_blast": 1.0, "wbc": 8.0,
         "cyto_cpss": "Low", "rbc_transfusion": 0, "ASXL1": 0, "NRAS": 0, "RUNX1": 0,
         "SETBP1": 0}
    p.update(kw)
    return p


@pytest.mark.parametrize("changes, score, cat", [
    ({}, 0, "Low"),                                                   # nothing adverse
    ({"who_cmml": "CMML-2"}, 1, "Intermediate-1"),                   # WHO CMML-2: 1
    ({"who_cmml": "CMML-0"}, 0, "Low"),                              # WHO 2016 CMML-0 = 2008 CMML-1
    ({"wbc": 13.0}, 1, "Intermediate-1"),                            # FAB MP-CMML (WBC >= 13): 1
    ({"wbc": 12.9}, 0, "Low"),
    ({"cyto_cpss": "Intermediate"}, 1, "Intermediate-1"),            # cytogenetics int: 1
    ({"cyto_cpss": "High"}, 2, "Intermediate-2"),                    # cytogenetics high: 2
    ({"rbc_transfusion": 1, "wbc": 20.0}, 2, "Intermediate-2"),      # TD 1 + MP 1
    ({"cyto_cpss": "High", "wbc": 20.0}, 3, "Intermediate-2"),       # 2-3: Int-2
    ({"cyto_cpss": "High", "wbc": 20.0, "rbc_transfusion": 1}, 4, "High"),  # 4-5: High
    ({"cyto_cpss": "High", "wbc": 20.0, "rbc_transfusion": 1, "who_cmml": "CMML-2"}, 5, "High"),
])
def test_cpss_such_2013(changes, score, cat):
    out = cpss(cmml(**changes))
    assert (out["cpss_score"], out["cpss_cat"], out["cpss_missing"]) == (score, cat, "")


def test_cpss_who_subtype_from_blasts_when_not_recorded():
    # WHO 2008 CMML-2: PB blasts >= 5% or BM blasts >= 10%
    assert cpss(cmml(who_cmml=NA, bm_blast=12.0))["cpss_score"] == 1
    assert cpss(cmml(who_cmml=NA, pb_blast=6.0, bm_blast=NA))["cpss_score"] == 1
    assert cpss(cmml(who_cmml=NA, bm_blast=4.0, pb_blast=1.0))["cpss_score"] == 0
    # BM blasts low but PB blasts unknown: cannot tell
    out = cpss(cmml(who_cmml=NA, bm_blast=4.0, pb_blast=NA))
    assert out["cpss_score"] is None and out["cpss_missing"] == "missing: who_cmml"
    assert out["cpss_cat"] is None  # 0 or 1 point: Low or Intermediate-1


def test_cpss_missing_input_keeps_category_only_when_it_cannot_change():
    out = cpss(cmml(cyto_cpss="High", wbc=20.0, rbc_transfusion=1, who_cmml=NA, pb_blast=NA))
    assert out["cpss_score"] is None and out["cpss_cat"] == "High"  # 4 or 5 -> High
    out = cpss(cmml(rbc_transfusion=NA))
    assert out["cpss_score"] is None and out["cpss_cat"] is None  # 0 or 1
    assert out["cpss_missing"] == "missing: rbc_transfusion"


@pytest.mark.parametrize("changes, genetic, score, cat", [
    ({}, 0, 0, "Low"),                                                  # genetic low, no clinical
    ({"ASXL1": 1}, 1, 1, "Intermediate-1"),                             # ASXL1 1 -> int-1
    ({"RUNX1": 1}, 2, 2, "Intermediate-2"),                             # RUNX1 2 -> int-2
    ({"cyto_cpss": "High", "NRAS": 1}, 3, 3, "Intermediate-2"),         # 2 + 1 -> high (3)
    ({"cyto_cpss": "High", "RUNX1": 1, "SETBP1": 1}, 3, 3, "Intermediate-2"),  # 5 capped at 3
    ({"cyto_cpss": "Intermediate", "SETBP1": 1, "bm_blast": 5.0}, 2, 3, "Intermediate-2"),
    ({"ASXL1": 1, "NRAS": 1, "RUNX1": 1, "bm_blast": 8.0}, 3, 4, "High"),  # 3 + blasts 1
    ({"RUNX1": 1, "wbc": 13.0, "rbc_transfusion": 1}, 2, 4, "High"),    # 2 + WBC 1 + TD 1
    ({"bm_blast": 5.0, "wbc": 15.0, "rbc_transfusion": 1}, 0, 3, "Intermediate-2"),
    ({"bm_blast": 4.9}, 0, 0, "Low"),                                   # blasts < 5%: 0
])
def test_cpss_mol_elena_2016(changes, genetic, score, cat):
    out = cpss_mol(cmml(**changes))
    assert out["cpss_mol_genetic_risk"] == genetic
    assert (out["cpss_mol_score"], out["cpss_mol_cat"]) == (score, cat)


def test_cpss_mol_missing_gene_that_cannot_matter_is_named_but_score_kept():
    # genetic score already >= 3 (ASXL1 1 + RUNX1 2): SETBP1 cannot change the group
    out = cpss_mol(cmml(ASXL1=1, RUNX1=1, SETBP1=NA))
    assert out["cpss_mol_score"] == 3 and out["cpss_mol_missing"] == "missing: SETBP1"
    out = cpss_mol(cmml(SETBP1=NA))
    assert out["cpss_mol_score"] is None and out["cpss_mol_cat"] is None


def aml(**kw):
    p = {c: 0 for c in ELN2022_INPUTS}
    p.update(kw)
    return p


@pytest.mark.parametrize("changes, cat", [
    ({}, "Intermediate"),                                   # nothing classified: intermediate
    ({"t_8_21": 1}, "Favorable"),                           # t(8;21) RUNX1::RUNX1T1
    ({"inv16": 1, "complex": 1}, "Favorable"),              # CBF favourable regardless
    ({"NPM1": 1}, "Favorable"),                             # NPM1 without FLT3-ITD
    ({"NPM1": 1, "FLT3_ITD": 1}, "Intermediate"),           # NPM1 with FLT3-ITD
    ({"NPM1": 1, "ASXL1": 1}, "Favorable"),                 # MR genes not adverse with NPM1
    ({"NPM1": 1, "del7_7q": 1}, "Adverse"),                 # NPM1 with adverse cytogenetics
    ({"CEBPA_bzip": 1}, "Favorable"),                       # bZIP in-frame CEBPA
    ({"CEBPA_bzip": 1, "RUNX1": 1}, "Favorable"),           # MR gene in favourable subtype
    ({"FLT3_ITD": 1}, "Intermediate"),                      # wt NPM1 with FLT3-ITD
    ({"t_9_11": 1}, "Intermediate"),                        # t(9;11) MLLT3::KMT2A
    ({"t_9_11": 1, "ASXL1": 1}, "Intermediate"),            # t(9;11) over rare adverse genes
    ({"kmt2a_r": 1}, "Adverse"),                            # other KMT2A rearrangements
    ({"t_6_9": 1}, "Adverse"),
    ({"t_9_22": 1}, "Adverse"),
    ({"t_8_16": 1}, "Adverse"),                             # t(8;16) KAT6A::CREBBP
    ({"t_8_16": 1, "NPM1": 1}, "Adverse"),                  # NPM1 with adverse cytogenetics
    ({"t_8_16": 1, "CEBPA_bzip": 1}, "Adverse"),            # adverse cytogenetics rule first
    ({"t_8_16": 1, "t_9_11": 1}, "Adverse"),                # t(9;11) outranks genes only
    ({"t_8_16": 1, "inv16": 1}, "Favorable"),               # CBF favourable regardless
    ({"inv3": 1}, "Adverse"),
    ({"mecom_r": 1}, "Adverse"),                            # t(3q26.2;v) MECOM rearranged
    ({"mecom_r": 1, "NPM1": 1}, "Adverse"),                 # NPM1 with adverse cytogenetics
    ({"mecom_r": 1, "CEBPA_bzip": 1}, "Adverse"),
    ({"mecom_r": 1, "t_9_11": 1}, "Adverse"),
    ({"mecom_r": 1, "t_8_21": 1}, "Favorable"),             # CBF favourable regardless
    ({"del5q": 1}, "Adverse"),
    ({"del17_17p": 1}, "Adverse"),
    ({"monosomal": 1}, "Adverse"),
    ({"TP53": 1}, "Adverse"),                               # mutated TP53 (VAF >= 10%)
    ({"SRSF2": 1}, "Adverse"),                              # myelodysplasia-related gene
    ({"ZRSR2": 1, "FLT3_ITD": 1}, "Adverse"),
])
def test_eln2022_dohner(changes, cat):
    out = eln2022(aml(**changes))
    assert out["eln2022_cat"] == cat and out["eln2022_missing"] == ""


def test_eln2022_missing_fields():
    # an unknown field that could change the group leaves it NaN and is named
    out = eln2022(aml(t_8_21=NA))
    assert out["eln2022_cat"] is None and out["eln2022_missing"] == "missing: t_8_21"
    out = eln2022(aml(NPM1=1, FLT3_ITD=NA))
    assert out["eln2022_cat"] is None and "FLT3_ITD" in out["eln2022_missing"]
    # decided before the unknown field matters: adverse cytogenetics, then gene panel unknown
    assert eln2022(aml(complex=1, ASXL1=NA))["eln2022_cat"] == "Adverse"
    assert eln2022(aml(t_8_21=1, TP53=NA, monosomal=NA))["eln2022_cat"] == "Favorable"
    # no lesion at all: intermediate whether FLT3-ITD is present or not
    assert eln2022(aml(FLT3_ITD=NA))["eln2022_cat"] == "Intermediate"
    # unknown t(8;16) / MECOM: undecided unless a favourable CBF or another adverse lesion decides
    out = eln2022(aml(NPM1=1, t_8_16=NA, mecom_r=NA))
    assert out["eln2022_cat"] is None and out["eln2022_missing"] == "missing: t_8_16, mecom_r"
    assert eln2022(aml(inv16=1, t_8_16=NA, mecom_r=NA))["eln2022_cat"] == "Favorable"
    assert eln2022(aml(del5q=1, mecom_r=NA))["eln2022_cat"] == "Adverse"
    assert eln2022(aml(t_8_16=1, mecom_r=NA))["eln2022_cat"] == "Adverse"


def test_eln2022_inputs_are_aml_schema_columns():
    from fedhaem_kernel.schema import AML
    assert set(ELN2022_INPUTS) <= set(AML.feature_names)
    assert {AML.feature(c).group for c in ("t_8_16", "mecom_r")} == {"cytogenetic"}


def mm(**kw):
    p = {"b2m": 2.0, "albumin": 4.0, "ldh": 180.0, "ldh_uln": 250.0, "del17p": 0, "t_4_14": 0,
         "t_14_16": 0}
    p.update(kw)
    return p


@pytest.mark.parametrize("changes, stage", [
    ({}, "I"),                                    # b2m < 3.5 and albumin >= 3.5
    ({"albumin": 3.4}, "II"),                     # b2m < 3.5, albumin < 3.5
    ({"b2m": 3.5}, "II"),                         # 3.5 <= b2m < 5.5
    ({"b2m": 5.5, "albumin": 4.5}, "III"),        # b2m >= 5.5 whatever albumin
])
def test_iss_greipp_2005(changes, stage):
    assert iss(mm(**changes))["iss_stage"] == stage


@pytest.mark.parametrize("changes, stage", [
    ({}, "I"),                                    # ISS I, standard-risk CA, normal LDH
    ({"t_4_14": 1}, "II"),                        # ISS I with high-risk CA -> II
    ({"ldh": 300.0}, "II"),                       # ISS I with LDH > ULN -> II
    ({"ldh": 250.0}, "I"),                        # LDH = ULN is normal
    ({"b2m": 4.0, "del17p": 1, "ldh": 400.0}, "II"),  # ISS II is always R-ISS II
    ({"b2m": 6.0}, "II"),                         # ISS III, standard risk, normal LDH -> II
    ({"b2m": 6.0, "t_14_16": 1}, "III"),          # ISS III + high-risk CA
    ({"b2m": 6.0, "ldh": 260.0}, "III"),          # ISS III + high LDH
])
def test_riss_palumbo_2015(changes, stage):
    assert riss(mm(**changes))["riss_stage"] == stage


def test_iss_riss_missing_values():
    assert iss(mm(b2m=NA))["iss_missing"] == "missing: b2m"
    assert iss(mm(b2m=6.0, albumin=NA))["iss_stage"] == "III"      # albumin irrelevant
    assert iss(mm(b2m=2.0, albumin=NA))["iss_stage"] is None
    assert riss(mm(b2m=4.0, ldh=NA, del17p=NA))["riss_stage"] == "II"  # ISS II decides
    out = riss(mm(del17p=NA))
    assert out["riss_stage"] is None and out["riss_missing"] == "missing: del17p"
    assert riss(mm(b2m=6.0, del17p=1, ldh=NA))["riss_stage"] == "III"  # one adverse suffices


def test_scores_accept_frames_and_reject_bad_values():
    df = pd.DataFrame([mm(), mm(b2m=6.0, t_4_14=1)], index=["p1", "p2"])
    out = riss(df)
    assert list(out["riss_stage"]) == ["I", "III"] and list(out.index) == ["p1", "p2"]
    with pytest.raises(ValueError, match=r"column 'del17p'.*not 0, 1"):
        riss(mm(del17p="yes"))
    with pytest.raises(ValueError, match=r"column 'cyto_cpss'.*'Bad'"):
        cpss(cmml(cyto_cpss="Bad"))
    with pytest.raises(KeyError, match="NPM1"):
        eln2022({k: v for k, v in aml().items() if k != "NPM1"})


def test_eln2022_tables_older_than_the_rare_lesion_columns_are_flagged():
    # tables made before t_15_17 / t_8_16 / mecom_r joined the schema: read as not tested,
    # so taken as absent on a read karyotype (complex known), and said
    old_row = {k: v for k, v in aml(NPM1=1).items() if k not in ("t_15_17", "t_8_16", "mecom_r")}
    out = eln2022(old_row)
    assert out["eln2022_cat"] == "Favorable"
    assert out["eln2022_note"] == ("t_15_17, t_8_16, mecom_r not tested separately: taken as "
                                   "absent on the read karyotype")
    assert eln2022(aml(NPM1=1))["eln2022_note"] == ""
    assert eln2022(aml(NPM1=1, mecom_r=NA))["eln2022_cat"] is None  # present column, unknown
    # no karyotype read (complex unknown): the absent columns stay unknown
    out = eln2022({**old_row, "complex": NA})
    assert out["eln2022_cat"] is None and "t_15_17 (not tested)" in out["eln2022_missing"]
