"""The analysis study's engine in process (fl_engine.analytics, fl_engine.federation.analysis):
every pooled figure against lifelines / pandas on the pooled rows discretised to the study's
grid; small-cell suppression on every reply; the reply checks refusing raw times and small
counts; and splitting the rows across hospitals in any way leaving the result unchanged."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

from fl_engine.analytics import km
from fl_engine.analytics.describe import HEAD, SUPPRESSED, describe_spec, quantile_from_bins
from fl_engine.analytics.settings import ANALYSES, default_analysis, validate_analysis
from fl_engine.cohort import generate_mds_cohort, split_nodes
from fl_engine.federation.analysis.kinds import COX, DESCRIBE, KM, request_config
from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeReply, NodeRequest, check_reply_privacy
from fl_engine.federation.executor import run_analysis_in_process
from fedhaem_kernel.schema import get_schema

STEP = 1.0
COVARIATES = ["age", "sex", "hb", "bm_blast"]


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_mds_cohort(900, seed=4)


@pytest.fixture(scope="module")
def tables(cohort) -> dict[str, pd.DataFrame]:
    return {f"H{i + 1}": p for i, p in enumerate(split_nodes(cohort, (0.5, 0.3, 0.2), seed=1))}


def _cfg(k: int = 0, **analysis) -> dict:
    return {"task": "analysis", "min_nodes": 2, "min_cell_count": k,
            "analysis": {"group_by": "sex", "covariates": COVARIATES, "time_step_months": STEP, **analysis}}


@pytest.fixture(scope="module")
def result(tables):
    doc, _ = run_analysis_in_process(_cfg(0), tables)
    return doc


def _pooled(tables) -> pd.DataFrame:
    rows = []
    for name, t in tables.items():
        t = t[np.isfinite(t.os_months) & t.os_event.isin([0, 1])].copy()
        t["hospital"] = name
        t["T"] = km.discretise(t.os_months.to_numpy(float), STEP)
        rows.append(t)
    return pd.concat(rows, ignore_index=True)


# --- Kaplan-Meier, bands, median, at-risk ---------------------------------------------------------

def test_km_per_group_equals_lifelines_on_the_pooled_discretised_rows(tables, result):
    pooled = _pooled(tables)
    assert set(result["km"]["groups"]) == {"F", "M"}
    for g, curve in result["km"]["groups"].items():
        rows = pooled[pooled.sex == g]
        kmf = KaplanMeierFitter().fit(rows["T"], rows.os_event)
        t = curve["time"]
        assert set(t) == set(kmf.survival_function_.index)  # 0 and every grid time with an exit
        np.testing.assert_allclose(curve["survival"], kmf.survival_function_.iloc[:, 0].loc[t], atol=1e-12)
        np.testing.assert_allclose(curve["lower"], kmf.confidence_interval_.iloc[:, 0].loc[t], atol=1e-12)
        np.testing.assert_allclose(curve["upper"], kmf.confidence_interval_.iloc[:, 1].loc[t], atol=1e-12)
        assert curve["at_risk"] == kmf.event_table["at_risk"].loc[t].astype(int).tolist()
        assert curve["events"] == kmf.event_table["observed"].loc[t].astype(int).tolist()
        assert curve["median"] == kmf.median_survival_time_
        lo, hi = median_survival_times(kmf.confidence_interval_).iloc[0]
        assert curve["median_ci"] == [None if np.isinf(lo) else lo, None if np.isinf(hi) else hi]
    table = result["km"]["at_risk_table"]
    assert table["times"][:3] == [0.0, 12.0, 24.0]
    for g, counts in table["groups"].items():
        rows = pooled[pooled.sex == g]
        assert counts == [int((rows["T"] >= x).sum()) for x in table["times"]]


def test_logrank_equals_lifelines_and_the_stratified_test_an_independent_sum(tables, result):
    pooled = _pooled(tables)
    pooled = pooled[pooled.sex.isin(["F", "M"])]
    lr = multivariate_logrank_test(pooled["T"], pooled.sex, pooled.os_event)
    assert result["logrank"]["groups"] == ["F", "M"] and result["logrank"]["df"] == 1
    assert abs(result["logrank"]["statistic"] - lr.test_statistic) < 1e-9
    assert abs(result["logrank"]["p"] - lr.p_value) < 1e-9
    # stratified by hospital: O - E and its variance summed over hospitals, written out naively
    o_e, var = 0.0, 0.0
    for _, s in pooled.groupby("hospital"):
        for t in sorted(s.loc[s.os_event == 1, "T"].unique()):
            at = s[s["T"] >= t]
            n, n1 = len(at), int((at.sex == "F").sum())
            d = int(((s["T"] == t) & (s.os_event == 1)).sum())
            d1 = int(((s["T"] == t) & (s.os_event == 1) & (s.sex == "F")).sum())
            o_e += d1 - d * n1 / n
            if n > 1:
                var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    assert abs(result["logrank_stratified"]["statistic"] - o_e ** 2 / var) < 1e-9
    assert result["logrank_stratified"]["statistic"] != pytest.approx(result["logrank"]["statistic"], abs=1e-6)


# --- Cox ------------------------------------------------------------------------------------------

def _lifelines_cox(tables, strata: bool):
    pooled = _pooled(tables)
    x = pooled[["age", "hb", "bm_blast"]].copy()
    x["sex=M"] = (pooled.sex == "M").astype(float)
    x = x[["age", "sex=M", "hb", "bm_blast"]]
    x["T"], x["E"] = pooled["T"], pooled.os_event
    if strata:
        x["hospital"] = pooled.hospital
    x = x.dropna()
    return CoxPHFitter().fit(x, "T", "E", strata=["hospital"] if strata else None,
                             fit_options={"precision": 1e-12}), len(x)


@pytest.mark.parametrize("stratified", [False, True])
def test_cox_equals_a_pooled_lifelines_fit_to_1e_6(tables, result, stratified):
    doc = result if not stratified else run_analysis_in_process(_cfg(0, cox_stratified=True), tables)[0]
    cox = doc["cox"]
    ref, n = _lifelines_cox(tables, stratified)
    assert cox["covariates"] == ["age", "sex=M", "hb", "bm_blast"] and cox["stratified"] is stratified
    assert cox["n"] == n and cox["events"] == int(ref.event_observed.sum())
    np.testing.assert_allclose(cox["coef"], ref.params_.values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cox["se"], ref.standard_errors_.values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cox["p"], ref.summary["p"].values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cox["hr_lower"], ref.summary["exp(coef) lower 95%"].values, atol=1e-6)
    np.testing.assert_allclose(cox["hr_upper"], ref.summary["exp(coef) upper 95%"].values, atol=1e-6)
    assert abs(cox["loglik"] - ref.log_likelihood_) < 1e-6


# --- describe -------------------------------------------------------------------------------------

def test_describe_pooled_moments_are_exact_and_quantiles_within_their_stated_bound(tables, result):
    pooled = _pooled(tables)
    d = result["describe"]
    assert d["pooled"]["n"] == len(pooled) and set(d["by_hospital"]) == set(tables)
    for col, s in d["pooled"]["numeric"].items():
        v = pooled[col].dropna()
        assert s["n"] == len(v) and s["missing"] == int(pooled[col].isna().sum())
        if len(v) < 2:  # a column the cohort never records
            assert s["sd"] is None
            if v.empty:
                assert s["mean"] is None and s["median"] is None
            continue
        assert abs(s["mean"] - v.mean()) < 1e-9 * max(1, abs(v.mean()))
        assert abs(s["sd"] - v.std(ddof=1)) < 1e-9 * max(1, v.std())
        for q, key in ((0.25, "q25"), (0.5, "median"), (0.75, "q75")):
            assert abs(s[key] - v.quantile(q)) <= s["quantile_error"] + 1e-12, (col, key)
        assert sum(s["histogram"]["counts"]) == len(v)
    for col, s in d["pooled"]["categorical"].items():
        assert s["missing"] == int(pooled[col].isna().sum())
    assert d["pooled"]["categorical"]["sex"]["counts"] == {"F": int((pooled.sex == "F").sum()),
                                                          "M": int((pooled.sex == "M").sum())}
    assert d["by_group"]["F"]["numeric"]["age"]["mean"] == pytest.approx(pooled[pooled.sex == "F"].age.mean(), abs=1e-9)
    h1 = tables["H1"]
    assert d["by_hospital"]["H1"]["numeric"]["hb"]["sd"] == pytest.approx(h1.hb.std(), abs=1e-9)


def test_quantile_from_bins_stays_inside_the_bin_of_the_true_quantile():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 3, 1000)
    edges = np.linspace(0, 20, 41)
    counts = np.histogram(np.clip(x, 0, 20), edges)[0].astype(float)
    for q in (0.1, 0.25, 0.5, 0.9):
        assert abs(quantile_from_bins(counts, edges, q) - np.quantile(x, q)) <= 0.5


def test_analysis_json_layout_and_phase_events(tables, tmp_path):
    cfg = {**_cfg(5), "model_dir": str(tmp_path / "out"), "metrics_path": str(tmp_path / "events.jsonl")}
    doc, _ = run_analysis_in_process(cfg, tables)
    on_disk = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["version"] == 1 and on_disk["time_unit"] == "months" and on_disk["min_cell_count"] == 5
    assert on_disk["hospitals"] == ["H1", "H2", "H3"] and on_disk["use_case"] == "MDS"
    assert set(on_disk) >= {"settings", "describe", "km", "logrank", "logrank_stratified", "cox", "notes"}
    assert any("coarsened" in n for n in on_disk["notes"])
    for note in on_disk["notes"]:  # a count of patients: never more than the hospital holds
        m = re.match(r"Kaplan-Meier: hospital (H\d) coarsened (\d+) of its patients", note)
        if m:
            assert 0 < int(m.group(2)) <= len(tables[m.group(1)]), note
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    phases = [(e["phase"], e.get("round")) for e in events if e["type"] == "phase"]
    assert phases[:2] == [("describe", 0), ("km", 0)] and phases[2] == ("cox", 1)
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    assert "analysis.json" in events[-1]["artefacts"]


# --- small cells ----------------------------------------------------------------------------------

def _count_slots(kind: str, reply: NodeReply, spec) -> list[np.ndarray]:
    """Every patient count a reply carries (the independent reading of the layouts)."""
    if kind == KM:
        return [np.asarray(a) for a in reply.arrays[:-1]] + [np.asarray(a) + np.asarray(b)
                                                             for a, b in zip(reply.arrays[:-1:2], reply.arrays[1:-1:2])]
    if kind == COX:
        return [np.asarray(reply.arrays[0]), np.array([reply.metrics["n"], reply.metrics["events"]])]
    out, per = [], 1 + len(spec.numeric) + len(spec.categorical)
    for i, a in enumerate(reply.arrays):
        j = i % per
        a = np.asarray(a)
        if j == 0 or j > len(spec.numeric):
            out.append(a)
        else:
            out += [a[:2], a[HEAD:]]
    return out + [np.array([reply.metrics["n"]])]


@pytest.mark.parametrize("k", [5, 11])
def test_no_reply_carries_a_count_below_the_threshold(tables, k):
    doc, transport = run_analysis_in_process(_cfg(k, group_by="cyto_ipssr"), tables, keep_replies=True)
    spec = describe_spec(get_schema("MDS"), doc["settings"])
    kinds = {kind for kind, _ in transport.replies}
    assert kinds == {DESCRIBE, KM, COX}
    seen_suppressed = 0
    for kind, reply in transport.replies:
        for a in _count_slots(kind, reply, spec):
            bad = a[(a != 0) & (a != SUPPRESSED) & (a < k)]
            assert bad.size == 0, (kind, bad)
            seen_suppressed += int(np.sum(a == SUPPRESSED))
    assert seen_suppressed > 0  # the threshold bit: something was suppressed
    assert any("suppressed" in n or "too few" in n for n in doc["notes"])


def _request(kind: str, cfg, arrays=None) -> NodeRequest:
    return NodeRequest(kind, arrays or [], request_config(cfg))


def test_reply_checks_refuse_raw_times_small_counts_and_foreign_layouts(tables):
    cfg = parse_run_config(_cfg(5))
    from fl_engine.federation.core import handle_request

    table = tables["H1"]
    req = _request(KM, cfg)
    good = handle_request(table, cfg, req, "H1")
    check_reply_privacy(KM, good, None, req)  # the honest reply passes
    raw = NodeReply("H1", [a.copy() for a in good.arrays], dict(good.metrics))
    raw.arrays[0] = raw.arrays[0].copy()
    raw.arrays[0][np.flatnonzero(raw.arrays[0])[0]] = 13.7  # a raw time where counts belong
    with pytest.raises(ValueError, match="whole numbers"):
        check_reply_privacy(KM, raw, None, req)
    small = NodeReply("H1", [a.copy() for a in good.arrays], dict(good.metrics))
    small.arrays[1] = small.arrays[1].copy()
    small.arrays[1][np.flatnonzero(small.arrays[1])[0]] = 2.0
    with pytest.raises(ValueError, match="small-cell threshold of 5"):
        check_reply_privacy(KM, small, None, req)
    with pytest.raises(ValueError, match="metrics must be exactly"):
        check_reply_privacy(KM, NodeReply("H1", good.arrays, {"moved": 0, "mean_time": 13.7}), None, req)

    dreq = _request(DESCRIBE, cfg)
    dgood = handle_request(table, cfg, dreq, "H1")
    check_reply_privacy(DESCRIBE, dgood, None, dreq)
    leak = NodeReply("H1", [a.copy() for a in dgood.arrays], dict(dgood.metrics))
    leak.arrays[1][HEAD] += 3.0
    leak.arrays[1][0] += 3.0
    with pytest.raises(ValueError, match="small-cell threshold"):
        check_reply_privacy(DESCRIBE, leak, None, dreq)
    with pytest.raises(ValueError, match="layout"):
        check_reply_privacy(DESCRIBE, NodeReply("H1", dgood.arrays[:-1], {"n": 450}), None, dreq)

    creq = _request(COX, cfg, [np.zeros(4)])
    cgood = handle_request(table, cfg, creq, "H1")
    check_reply_privacy(COX, cgood, [(4,)], creq)
    cleak = NodeReply("H1", [a.copy() for a in cgood.arrays], dict(cgood.metrics))
    cleak.arrays[0][np.flatnonzero(cleak.arrays[0])[0]] = 1.0
    with pytest.raises(ValueError, match="small-cell threshold"):
        check_reply_privacy(COX, cleak, [(4,)], creq)


def test_a_hospital_below_the_threshold_refuses_and_the_run_goes_on(tables):
    tiny = {**tables, "H4": tables["H3"].iloc[:3]}
    doc, _ = run_analysis_in_process(_cfg(5), tiny)
    assert doc["hospitals"] == ["H1", "H2", "H3"]
    assert any("H4" in n and "did not answer" in n for n in doc["notes"])


# --- splitting rows across hospitals in any way leaves the pooled result unchanged --------------

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assign=st.lists(st.integers(0, 4), min_size=240, max_size=240))
def test_any_split_across_hospitals_leaves_the_pooled_result_unchanged(assign):
    df = _SMALL
    labels = np.array(assign)
    tables = {f"H{h}": df[labels == h] for h in sorted(set(assign)) if (labels == h).sum() >= 2}
    if len(tables) < 1:
        return
    rows = df[np.isin(labels, [int(n[1:]) for n in tables])]
    doc, _ = run_analysis_in_process({**_cfg(0), "min_nodes": 1}, tables)
    ref, _ = run_analysis_in_process({**_cfg(0), "min_nodes": 1}, {"ALL": rows})
    for g in ref["km"]["groups"]:
        np.testing.assert_allclose(doc["km"]["groups"][g]["survival"], ref["km"]["groups"][g]["survival"], atol=1e-12)
        assert doc["km"]["groups"][g]["median"] == ref["km"]["groups"][g]["median"]
    assert doc["logrank"]["statistic"] == pytest.approx(ref["logrank"]["statistic"], abs=1e-9)
    np.testing.assert_allclose(doc["cox"]["coef"], ref["cox"]["coef"], atol=1e-8)
    np.testing.assert_allclose(doc["cox"]["se"], ref["cox"]["se"], atol=1e-8)
    for col, s in ref["describe"]["pooled"]["numeric"].items():
        got = doc["describe"]["pooled"]["numeric"][col]
        assert got["histogram"]["counts"] == s["histogram"]["counts"] and got["median"] == s["median"]
        assert got["mean"] == pytest.approx(s["mean"], abs=1e-9)


_SMALL = generate_mds_cohort(240, seed=9)


# --- settings -------------------------------------------------------------------------------------

def test_settings_defaults_come_from_the_schema_and_errors_name_each_field():
    d = default_analysis("MDS", "os")
    assert d["analyses"] == list(ANALYSES) and d["covariates"] == ["age", "sex", "hb", "bm_blast"]
    assert "age" in d["numeric"] and "sex" in d["categorical"] and d["quantile_bins"] == 200
    with pytest.raises(ValueError) as err:
        validate_analysis("MDS", "os", {"group_by": "age", "numeric": ["sex"], "covariates": ["nope"],
                                        "time_step_months": 0})
    msg = str(err.value)
    assert "analysis.time_step_months" in msg
    with pytest.raises(ValueError) as err:
        validate_analysis("MDS", "os", {"group_by": "age", "numeric": ["sex"], "covariates": ["nope"]})
    msg = str(err.value)
    for field in ("analysis.group_by", "analysis.numeric", "analysis.covariates"):
        assert field in msg
    with pytest.raises(ValueError, match="endpoint"):
        validate_analysis("MDS", "efs", None)
    with pytest.raises(ValueError, match="run config: analysis"):
        parse_run_config({"task": "analysis", "analysis": {"group_by": "nope"}})


def test_a_node_refuses_an_analysis_of_columns_outside_the_approved_features():
    from fl_engine.federation.approval import run_outside_settings, study_settings

    inside = parse_run_config({"task": "analysis", "analysis": {"numeric": ["age", "hb"], "categorical": ["sex"],
                                                                "covariates": ["age"], "group_by": "sex"}})
    outside = parse_run_config({"task": "analysis", "analysis": {"numeric": ["age"], "categorical": [],
                                                                 "covariates": ["TP53"]}})

    def approved(analysis):
        return study_settings(use_case="MDS", endpoint="os", dataset="", features=["age", "sex", "hb"],
                              feature_groups=[], model="deepsurv", model_params={}, local_epochs=1,
                              privacy={"min_patients_per_node": 0, "min_cell_count": 0, "dp_enabled": False,
                                       "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0}, max_rounds=3,
                              analysis=analysis)

    assert run_outside_settings(inside, approved(inside.analysis)) == []
    # even a study whose approved analysis names TP53 cannot use a column outside its features
    assert run_outside_settings(outside, approved(outside.analysis)) == [
        "analyses columns outside the approved features: ['TP53']"]


def test_an_scd_analysis_by_genotype_equals_lifelines_on_the_pooled_rows():
    from fl_engine import cohort as cohorts

    try:
        schema = get_schema("SCD")
    except KeyError:
        pytest.skip("no SCD schema yet")
    if not hasattr(cohorts, "generate_scd_cohort"):
        pytest.skip("no SCD generator yet")
    df = cohorts.generate_scd_cohort(800, seed=2)
    tables = {f"H{i + 1}": p for i, p in enumerate(split_nodes(df, (0.5, 0.3, 0.2), seed=2))}
    group = "genotype" if "genotype" in schema.feature_names else "sex"
    doc, _ = run_analysis_in_process({"task": "analysis", "use_case": "SCD", "endpoint": "os", "min_nodes": 2,
                                      "analysis": {"group_by": group, "covariates": ["age", "hb"]}}, tables)
    pooled = _pooled(tables)
    for g, curve in doc["km"]["groups"].items():
        rows = pooled[pooled[group].astype(str) == g]
        kmf = KaplanMeierFitter().fit(rows["T"], rows.os_event)
        np.testing.assert_allclose(curve["survival"], kmf.survival_function_.iloc[:, 0].loc[curve["time"]], atol=1e-12)
    x = pooled[["age", "hb", "T", "os_event"]].dropna()
    ref = CoxPHFitter().fit(x, "T", "os_event", fit_options={"precision": 1e-12})
    np.testing.assert_allclose(doc["cox"]["coef"], ref.params_.values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(doc["cox"]["se"], ref.standard_errors_.values, atol=1e-6, rtol=0)


def test_a_cox_model_that_cannot_be_fitted_leaves_the_other_analyses_standing(tables):
    no_hb = {name: t.assign(hb=np.nan) for name, t in tables.items()}  # no complete case for Cox
    doc, _ = run_analysis_in_process(_cfg(0, covariates=["hb"]), no_hb)
    assert doc["cox"] is None and any(n.startswith("Cox model not fitted") for n in doc["notes"])
    assert doc["km"]["groups"] and doc["logrank"]["statistic"] > 0
    assert doc["describe"]["pooled"]["numeric"]["hb"]["missing"] == sum(len(t) for t in tables.values())


def test_unrecorded_group_values_get_their_own_curve_but_stay_out_of_the_log_rank(tables):
    gaps = {name: t.assign(sex=t.sex.where(np.arange(len(t)) % 9 != 0)) for name, t in tables.items()}
    doc, _ = run_analysis_in_process(_cfg(0), gaps)
    assert set(doc["km"]["groups"]) == {"F", "M", "(missing)"}
    assert doc["logrank"]["groups"] == ["F", "M"] and doc["logrank"]["df"] == 1
    pooled = _pooled(gaps)
    pooled = pooled[pooled.sex.isin(["F", "M"])]
    lr = multivariate_logrank_test(pooled["T"], pooled.sex, pooled.os_event)
    assert abs(doc["logrank"]["statistic"] - lr.test_statistic) < 1e-9
