"""Sickle cell disease: the generated teaching cohort keeps the relationships docs/scd.md states,
splits into hospitals, and the survival models (exact Cox, DeepSurv) and a generator (Bayesian
network) run on it through the in-process federation; SCD has no conventional score and the
comparison says nothing rather than failing."""
import json

import numpy as np
import pandas as pd
import pytest

from fedhaem_kernel.schema import SCD
from fl_engine.cohort import generate_scd_cohort, split_nodes
from fl_engine.federation import parse_run_config, run_in_process
from fl_engine.federation.comparison import coverage_notes
from fl_engine.scores.conventional import (LABELS, conventional_groups, conventional_risks, coverage_report,
                                           group_layout)
from fl_engine.scores.usage import score_inputs, used_by

ENDPOINT_COLUMNS = ["os_months", "os_event", "sev_months", "sev_event"]


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_scd_cohort(8000, seed=0)


def test_columns_types_and_bounds_follow_the_schema(cohort):
    assert list(cohort.columns) == ["patient_id"] + SCD.feature_names + ENDPOINT_COLUMNS
    assert cohort.patient_id.is_unique
    for f in SCD.features:
        v = cohort[f.name].dropna()
        assert len(v) > 0, f.name
        if f.kind == "numeric":
            assert v.min() >= f.minimum and v.max() <= f.maximum, f.name
        elif f.kind == "binary":
            assert set(v.unique()) <= {0.0, 1.0}, f.name
        else:
            assert set(v.unique()) <= set(f.categories), f.name
    for ep in ("os", "sev"):
        assert (cohort[f"{ep}_months"] > 0).all() and set(cohort[f"{ep}_event"]) == {0, 1}
    # the first severe event includes death: never later than death, and every death is one
    assert (cohort.sev_months <= cohort.os_months + 1e-9).all()
    assert (cohort.sev_event >= cohort.os_event).all()


def test_same_seed_same_cohort_other_seed_other_cohort():
    a, b = generate_scd_cohort(300, seed=4), generate_scd_cohort(300, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_scd_cohort(300, seed=5))
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_scd_cohort(0)


def test_genotype_mix_and_laboratory_relationships(cohort):
    share = cohort.genotype.value_counts(normalize=True)
    assert 0.62 <= share["HbSS"] <= 0.70 and 0.21 <= share["HbSC"] <= 0.29
    assert 0.05 <= share["HbS-beta0-thal"] + share["HbS-beta+-thal"] <= 0.12
    by = cohort.groupby("genotype")[["hb", "retic", "ldh", "bilirubin"]].median()
    ss, sc = by.loc["HbSS"], by.loc["HbSC"]
    assert 7.5 <= ss.hb <= 9.0 and 10.3 <= sc.hb <= 11.8  # ~8 vs ~11 g/dL
    assert ss.retic > 1.8 * sc.retic and ss.ldh > 1.4 * sc.ldh and ss.bilirubin > 1.6 * sc.bilirubin
    # haemolysis markers move together, against haemoglobin
    ssd = cohort[cohort.genotype == "HbSS"]
    corr = ssd[["hb", "retic", "ldh", "bilirubin"]].corr(method="spearman")
    assert corr.loc["retic", "ldh"] > 0.2 and corr.loc["ldh", "bilirubin"] > 0.2 and corr.loc["hb", "ldh"] < 0


def test_hydroxyurea_raises_hbf_and_lowers_crises(cohort):
    ss = cohort[cohort.genotype == "HbSS"]
    on, off = ss[ss.hydroxyurea == 1], ss[ss.hydroxyurea == 0]
    assert on.hbf.median() > 1.7 * off.hbf.median()
    assert on.voc_per_year.mean() < 0.8 * off.voc_per_year.mean()
    # more HbF, fewer crises, within HbSS off hydroxyurea
    hi = off.hbf >= off.hbf.quantile(0.75)
    lo = off.hbf <= off.hbf.quantile(0.25)
    assert off[hi].voc_per_year.mean() < off[lo].voc_per_year.mean()


def test_tcd_only_in_screened_children_and_abnormal_in_a_minority(cohort):
    tcd = cohort.dropna(subset=["tcd_velocity"])
    assert tcd.age.between(2, 16).all()
    assert set(tcd.genotype) <= {"HbSS", "HbS-beta0-thal"}
    abnormal = (tcd.tcd_velocity >= 200).mean()
    assert 0.02 <= abnormal <= 0.15


def test_survival_by_genotype_hbf_and_hydroxyurea(cohort):
    from lifelines import CoxPHFitter, KaplanMeierFitter

    med = {}
    for g in ("HbSS", "HbSC"):
        x = cohort[cohort.genotype == g]
        km = KaplanMeierFitter().fit(x.age + x.os_months / 12, x.os_event, entry=x.age)  # attained age
        med[g] = km.median_survival_time_
    assert 45 <= med["HbSS"] <= 62 and med["HbSC"] > med["HbSS"] + 8
    d = cohort.dropna(subset=["genotype", "hbf", "hydroxyurea", "acs_history"]).copy()
    d["ss"] = d.genotype.isin(["HbSS", "HbS-beta0-thal"]).astype(float)
    cph = CoxPHFitter().fit(d[["age", "ss", "hbf", "hydroxyurea", "acs_history", "os_months", "os_event"]],
                            "os_months", "os_event")
    assert cph.params_["ss"] > 0.4 and cph.params_["hbf"] < 0 and cph.params_["hydroxyurea"] < 0
    assert cph.params_["acs_history"] > 0
    assert 0.05 <= cohort.os_event.mean() <= 0.2 and cohort.sev_event.mean() > cohort.os_event.mean() + 0.05


def test_split_nodes_splits_the_scd_cohort_disjointly(cohort):
    parts = split_nodes(cohort, (0.5, 0.3, 0.2), seed=2)
    assert [len(p) for p in parts] == pytest.approx([4000, 2400, 1600], abs=2)
    ids = [set(p.patient_id) for p in parts]
    assert set.union(*ids) == set(cohort.patient_id) and sum(map(len, ids)) == len(cohort)
    rates = [p.os_event.mean() for p in parts]
    assert max(rates) - min(rates) < 0.01  # stratified on os_event


def test_scd_has_no_conventional_score_and_says_so_by_omission(cohort):
    df = cohort.head(200)
    assert conventional_risks(df, "SCD") == {} and conventional_groups(df, "SCD") == {}
    assert coverage_report(df, "SCD") == {} and group_layout("SCD") == []
    assert score_inputs("SCD") == {} and used_by("SCD") == {}


@pytest.fixture(scope="module")
def hospitals(cohort):
    parts = split_nodes(cohort.head(3000), (0.5, 0.3, 0.2), seed=7)
    return {f"H{i + 1}": p for i, p in enumerate(parts)}


def _global_c(hist) -> float:
    return next(m["value"] for m in hist.rounds[-1]["metrics"] if m["node"] == "global" and m["name"] == "c_index")


@pytest.mark.parametrize("endpoint", ["os", "sev"])
def test_exact_cox_on_scd_across_three_hospitals(hospitals, endpoint):
    hist = run_in_process({"dataset": "scd", "use_case": "SCD", "endpoint": endpoint, "model": "cox",
                           "num_rounds": 1, "min_nodes": 3, "comparison": True}, hospitals)
    c = _global_c(hist)
    assert c > (0.7 if endpoint == "os" else 0.62), c
    metrics = hist.rounds[-1]["metrics"]
    assert not any(m["name"].startswith(tuple(LABELS)) for m in metrics)  # no IPSS-M & co for SCD
    assert coverage_notes(metrics) == []


def test_deepsurv_on_scd_across_three_hospitals(hospitals):
    cfg = {"dataset": "scd", "use_case": "SCD", "endpoint": "os", "model": "deepsurv", "num_rounds": 3,
           "local_epochs": 5, "min_nodes": 3, "seed": 1}
    hist = run_in_process(cfg, hospitals)
    c = _global_c(hist)
    assert c > 0.7, c
    model = hist.model(parse_run_config(cfg))
    from fl_engine.features import Preprocessor
    pre = Preprocessor.from_dict(hist.preprocessor)
    risk = model.predict_risk(pre.transform(hospitals["H3"]))
    assert risk.shape == (len(hospitals["H3"]),) and np.isfinite(risk).all()
    # the model ranks HbSS above HbSC, as the cohort's hazards do
    h3 = hospitals["H3"]
    assert np.median(risk[(h3.genotype == "HbSS").to_numpy()]) > np.median(risk[(h3.genotype == "HbSC").to_numpy()])


def test_bayesian_network_generator_learns_and_samples_an_scd_cohort(cohort, tmp_path):
    from fl_engine.federation.synthesis import run_synthesis_in_process

    a, b = split_nodes(cohort.head(1600), (0.6, 0.4), seed=4)
    out = run_synthesis_in_process({"use_case": "SCD", "endpoint": "os", "task": "synthesis",
                                    "generator": "bayesian_network", "num_rounds": 1, "seed": 3,
                                    "model_dir": str(tmp_path / "out")}, {"H1": a, "H2": b})
    syn = pd.read_csv(tmp_path / "out" / "synthetic.csv")
    assert {"genotype", "hbf", "hb", "hydroxyurea", "os_months", "os_event"} <= set(syn.columns)
    assert "tcd_velocity" not in syn.columns  # measured in children only: not a default column
    assert len(syn) > 300 and syn.genotype.isin(SCD.feature("genotype").categories).all()
    share = syn.genotype.value_counts(normalize=True)
    assert abs(share["HbSS"] - 0.66) < 0.07 and abs(share["HbSC"] - 0.25) < 0.07
    assert syn[syn.genotype == "HbSS"].hb.mean() < syn[syn.genotype == "HbSC"].hb.mean() - 1.5
    assert syn[syn.hydroxyurea == 1].hbf.mean() > 1.5 * syn[syn.hydroxyurea == 0].hbf.mean()
    g = {m["name"]: m["value"] for m in out["rounds"][-1]["metrics"] if m["node"] == "global"}
    assert g["tstr_c_index"] > 0.55 and g["csf"] > 0.8
    report = json.loads((tmp_path / "out" / "synthesis.json").read_text())
    assert report  # the run's report is written beside the cohort
