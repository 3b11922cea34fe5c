"""IPSS-R / IPSS-M rules on hand-worked cases, missing-value handling and properties."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhaem_kernel.schema import CYTO_IPSSR
from fl_engine.scores import IPSSM_TERMS, ipssm, ipssr, ipssra
from fl_engine.scores.mds import IPSSM_MAIN_GENES, IPSSM_RESIDUAL_GENES


def patient(**kw):
    base = {"hb": 12.0, "plt": 200.0, "anc": 3.0, "bm_blast": 1.0, "cyto_ipssr": "Very Good",
            "age": 70.0}
    base.update(kw)
    return base


@pytest.mark.parametrize("changes, points", [
    ({}, 0.0),                                   # every variable in its best band
    ({"bm_blast": 2.0}, 0.0),                    # blasts <= 2%: 0
    ({"bm_blast": 2.1}, 1.0),                    # >2 to <5%: 1
    ({"bm_blast": 5.0}, 2.0),                    # 5-10%: 2
    ({"bm_blast": 10.0}, 2.0),
    ({"bm_blast": 10.1}, 3.0),                   # >10%: 3
    ({"hb": 10.0}, 0.0),                         # Hb >= 10: 0
    ({"hb": 9.9}, 1.0),                          # 8 to <10: 1
    ({"hb": 8.0}, 1.0),
    ({"hb": 7.9}, 1.5),                          # <8: 1.5
    ({"plt": 100.0}, 0.0),                       # >= 100: 0
    ({"plt": 50.0}, 0.5),                        # 50 to <100: 0.5
    ({"plt": 49.0}, 1.0),                        # <50: 1
    ({"anc": 0.8}, 0.0),                         # ANC >= 0.8: 0
    ({"anc": 0.79}, 0.5),                        # <0.8: 0.5
    ({"cyto_ipssr": "Very Poor"}, 4.0),          # cytogenetics Very Good 0 .. Very Poor 4
    ({"cyto_ipssr": "Intermediate", "hb": 7, "plt": 20, "anc": 0.5, "bm_blast": 15}, 8.0),
])
def test_ipssr_points_greenberg_2012(changes, points):
    assert ipssr(patient(**changes))["ipssr_score"] == points


@pytest.mark.parametrize("changes, score, category", [
    ({"cyto_ipssr": "Good", "plt": 60.0}, 1.5, "Very Low"),              # <= 1.5
    ({"cyto_ipssr": "Intermediate"}, 2.0, "Low"),                        # > 1.5 - 3
    ({"cyto_ipssr": "Poor"}, 3.0, "Low"),
    ({"cyto_ipssr": "Poor", "plt": 60.0}, 3.5, "Intermediate"),          # > 3 - 4.5
    ({"cyto_ipssr": "Very Poor", "plt": 60.0}, 4.5, "Intermediate"),
    ({"cyto_ipssr": "Very Poor", "hb": 9.0}, 5.0, "High"),               # > 4.5 - 6
    ({"cyto_ipssr": "Very Poor", "hb": 9.0, "bm_blast": 3.0}, 6.0, "High"),
    ({"cyto_ipssr": "Very Poor", "hb": 9.0, "bm_blast": 3.0, "plt": 60.0}, 6.5, "Very High"),
])
def test_ipssr_category_cut_points_are_right_closed(changes, score, category):
    out = ipssr(patient(**changes))
    assert out["ipssr_score"] == score and out["ipssr_cat"] == category


def test_ipssra_age_adjustment_hand_worked():
    # IPSS-R 4 at age 80: 4 + (80 - 70) * (0.05 - 4 * 0.005) = 4.3
    out = ipssra(patient(cyto_ipssr="Intermediate", hb=9.0, bm_blast=3.0, age=80.0))
    assert out["ipssr_score"] == 4.0
    assert out["ipssra_score"] == pytest.approx(4.3)
    assert out["ipssra_cat"] == "Intermediate"
    # IPSS-R 4 at age 50: 4 - 20 * 0.03 = 3.4, still Intermediate; at age 30: 2.8, Low
    assert ipssra(patient(cyto_ipssr="Intermediate", hb=9.0, bm_blast=3.0, age=30.0))[
        "ipssra_cat"] == "Low"


def test_ipssr_missing_input_gives_nan_with_reason_never_zero():
    out = ipssra(pd.DataFrame([patient(hb=np.nan), patient(age=np.nan), patient()]))
    assert np.isnan(out.loc[0, "ipssr_score"]) and pd.isna(out.loc[0, "ipssr_cat"])
    assert out.loc[0, "ipssr_missing"] == "missing: hb"
    assert out.loc[0, "ipssra_missing"] == "missing: hb"
    assert out.loc[1, "ipssr_score"] == 0.0 and np.isnan(out.loc[1, "ipssra_score"])
    assert out.loc[1, "ipssra_missing"] == "missing: age"
    assert out.loc[2, "ipssr_missing"] == ""


def test_ipssr_bad_input_names_row_and_column():
    df = pd.DataFrame([patient(), patient(cyto_ipssr="Int")])
    with pytest.raises(ValueError, match=r"row 1 .*column 'cyto_ipssr'.*'Int'"):
        ipssr(df)
    with pytest.raises(ValueError, match=r"row 0 .*column 'hb'.*outside"):
        ipssr(patient(hb=35.0))
    with pytest.raises(ValueError, match=r"column 'plt'.*not a number"):
        ipssr(patient(plt="many"))
    with pytest.raises(KeyError, match="anc"):
        ipssr({k: v for k, v in patient().items() if k != "anc"})


def mds_patient(**kw):
    p = {"hb": 9.87, "plt": 141.0, "bm_blast": 4.61, "cyto_ipssr": "Good", "del5q": 0,
         "del7_7q": 0, "del17_17p": 0, "complex": 0, "tp53_count": 0, "tp53_maxvaf": 0.0,
         "tp53_loh": 0}
    p.update({g: 0 for g in IPSSM_MAIN_GENES + IPSSM_RESIDUAL_GENES})
    p.update(kw)
    return p


def _expected(terms: dict) -> float:
    """Score by the published formula, from model terms (missing ones at their mean)."""
    x = {k: v[1] for k, v in IPSSM_TERMS.items()}
    x.update(terms)
    return sum(IPSSM_TERMS[k][0] * (x[k] - IPSSM_TERMS[k][1]) for k in x) / np.log(2)


def test_ipssm_hand_worked_terms():
    # clinical values at (about) the cohort means; genes all wild type
    base = {"HB1": 9.87, "TRANSF_PLT100": 1.41, "BLAST5": 4.61 / 5, "CYTOVEC": 1.0,
            "TP53multi": 0.0, "SF3B1_5q": 0.0, "SF3B1_alpha": 0.0, "Nres2": 0.0}
    base.update({g: 0.0 for g in IPSSM_MAIN_GENES if g != "SF3B1"})
    out = ipssm(mds_patient())
    assert out["ipssm_score"] == pytest.approx(round(_expected(base), 2), abs=1e-9)
    # TP53: one mutation + del(17p) implies LOH -> multi-hit (weight 1.18)
    out = ipssm(mds_patient(tp53_count=1, del17_17p=1))
    assert out["ipssm_score"] == pytest.approx(round(_expected({**base, "TP53multi": 1.0}), 2))
    # one mutation with VAF 0.6 (> 0.55) also implies LOH
    assert ipssm(mds_patient(tp53_count=1, tp53_maxvaf=0.6))["ipssm_score"] == out["ipssm_score"]
    # SF3B1 alone -> SF3B1_alpha 1; with isolated del(5q) -> SF3B1_5q 1 instead
    sf = ipssm(mds_patient(SF3B1=1))["ipssm_score"]
    assert sf == pytest.approx(round(_expected({**base, "SF3B1_alpha": 1.0}), 2))
    sf5q = ipssm(mds_patient(SF3B1=1, del5q=1))["ipssm_score"]
    assert sf5q == pytest.approx(round(_expected({**base, "SF3B1_5q": 1.0}), 2))
    # residual genes count up to 2
    three = ipssm(mds_patient(BCOR=1, WT1=1, STAG2=1))["ipssm_score"]
    assert three == pytest.approx(round(_expected({**base, "Nres2": 2.0}), 2))
    # platelets above 250 and blasts above 20% are capped
    capped = ipssm(mds_patient(plt=900.0, bm_blast=25.0))["ipssm_score"]
    assert capped == pytest.approx(round(_expected({**base, "TRANSF_PLT100": 2.5,
                                                    "BLAST5": 4.0}), 2))


def test_ipssm_missing_gene_scenarios_and_annotation():
    out = ipssm(mds_patient(NPM1=np.nan))
    assert out["ipssm_score_worst"] - out["ipssm_score_best"] == pytest.approx(
        round(0.43 / np.log(2), 2), abs=0.011)
    assert out["ipssm_score"] == out["ipssm_score_mean"]  # range below 1: mean reported
    assert "NPM1" in out["ipssm_comment"]
    # many unknowns: range above 1 -> no single score
    unknown = {g: np.nan for g in IPSSM_MAIN_GENES}
    wide = ipssm(mds_patient(**unknown))
    assert wide["ipssm_score"] is None
    assert wide["ipssm_score_worst"] - wide["ipssm_score_best"] > 1


def test_ipssm_tp53_single_mutation_unknown_loh_is_missing_not_zero():
    out = ipssm(mds_patient(tp53_count=1, tp53_loh=np.nan, tp53_maxvaf=0.2))
    assert out["ipssm_score_best"] < out["ipssm_score_worst"]
    assert "TP53multi" in out["ipssm_comment"]


_BIN = st.sampled_from([0.0, 1.0, np.nan])


@settings(max_examples=40, deadline=None)
@given(st.fixed_dictionaries({
    "hb": st.one_of(st.floats(2, 20), st.just(np.nan)),
    "plt": st.one_of(st.floats(0, 2000), st.just(np.nan)),
    "bm_blast": st.one_of(st.floats(0, 30), st.just(np.nan)),
    "cyto_ipssr": st.sampled_from(list(CYTO_IPSSR) + [None]),
    "tp53_count": st.sampled_from([0.0, 1.0, 2.0, np.nan]),
    "tp53_maxvaf": st.one_of(st.floats(0, 1), st.just(np.nan)),
    **{c: _BIN for c in ("del5q", "del7_7q", "del17_17p", "complex", "tp53_loh")
       + IPSSM_MAIN_GENES + IPSSM_RESIDUAL_GENES},
}))
def test_ipssm_best_mean_worst_are_ordered(p):
    out = ipssm(p)
    assert out["ipssm_score_best"] <= out["ipssm_score_mean"] <= out["ipssm_score_worst"]
    complete = all(not (isinstance(v, float) and np.isnan(v)) and v is not None for v in p.values())
    if complete:
        assert out["ipssm_score_best"] == out["ipssm_score_worst"] == out["ipssm_score"]


def test_ipssm_accepts_frames_and_keeps_index():
    df = pd.DataFrame([mds_patient(), mds_patient(TP53=1)], index=["a", "b"])
    out = ipssm(df)
    assert list(out.index) == ["a", "b"]
    with pytest.raises(ValueError, match=r"column 'NPM1'.*not 0, 1"):
        ipssm(mds_patient(NPM1=2))
