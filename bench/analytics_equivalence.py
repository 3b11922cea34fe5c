"""The analysis study across hospitals against the same analysis on the pooled rows.

    python bench/analytics_equivalence.py [--json] [--scd-rows 3000]

Cohorts: the IWG-PM MDS cohort (../shared/data/mds_iwgpm, patients with overall survival; skipped
with a message when the folder is absent) and the generated SCD cohort
(fl_engine.cohort.generate_scd_cohort; skipped while there is none). Each is split over 3 and 5
simulated hospitals like fl_engine.cohort.split_nodes (60/30/10 and 45/20/15/10/10) and run
through the in-process federation (fl_engine.federation.executor.run_analysis_in_process: the
same message kinds, reply checks and manager code as a deployed run), small-cell threshold 0.

Oracle: lifelines on the pooled rows discretised to the study's grid (time_step_months 1):
KaplanMeierFitter per group (survival at every time, median), multivariate_logrank_test,
CoxPHFitter (Efron ties, as the federated fit; the use case's default covariates; strata =
hospital for the stratified fit), pandas for mean / SD. The stratified log-rank has no lifelines
function: its oracle is the O - E and variance sums written out per hospital here. Printed: the
largest absolute difference of each, and the seconds each analysis took (wall time on a shared
2-core machine). A second pass with min_cell_count 5 shows what small-cell coarsening changes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines import CoxPHFitter, KaplanMeierFitter  # noqa: E402
from lifelines.statistics import multivariate_logrank_test  # noqa: E402

from fedhaem_kernel.schema import get_schema  # noqa: E402
from fl_engine import cohort as cohorts  # noqa: E402
from fl_engine.analytics import km  # noqa: E402
from fl_engine.analytics.design import design_terms  # noqa: E402
from fl_engine.analytics.settings import default_analysis  # noqa: E402
from fl_engine.federation.executor import run_analysis_in_process  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mds_iwgpm"
SPLITS = {3: (0.6, 0.3, 0.1), 5: (0.45, 0.2, 0.15, 0.1, 0.1)}
STEP = 1.0


def _pooled(tables: dict[str, pd.DataFrame], endpoint: str) -> pd.DataFrame:
    rows = []
    for name, t in tables.items():
        t = t.copy()
        t["hospital"] = name
        rows.append(t)
    p = pd.concat(rows, ignore_index=True)
    d, e = p[f"{endpoint}_months"], p[f"{endpoint}_event"]
    p = p[np.isfinite(d) & (d >= 0) & e.isin([0, 1])].copy()
    p["T"] = km.discretise(p[f"{endpoint}_months"].to_numpy(float), STEP)
    p["E"] = p[f"{endpoint}_event"].astype(float)
    return p


def _group_of(p: pd.DataFrame, schema, column: str) -> pd.Series:
    if schema.feature(column).kind == "binary":
        return p[column].map({0: "0", 1: "1", 0.0: "0", 1.0: "1"})
    return p[column].where(p[column].isin(schema.feature(column).categories))


def _stratified_logrank(p: pd.DataFrame, groups: list[str]) -> float:
    k = len(groups)
    z, v = np.zeros(k), np.zeros((k, k))
    for _, s in p.groupby("hospital"):
        for t in np.unique(s.loc[s.E == 1, "T"]):
            at = s[s["T"] >= t]
            n_g = np.array([(at.group == g).sum() for g in groups], float)
            d_g = np.array([((s["T"] == t) & (s.E == 1) & (s.group == g)).sum() for g in groups], float)
            n, d = n_g.sum(), d_g.sum()
            z += d_g - d * n_g / n
            if n > 1:
                v += d * (n - d) / (n - 1) * (np.diag(n_g / n) - np.outer(n_g, n_g) / n ** 2)
    return float(z[:-1] @ np.linalg.pinv(v[:-1, :-1]) @ z[:-1])


def _cox_frame(p: pd.DataFrame, schema, covariates: list[str], strata: bool) -> pd.DataFrame:
    x = pd.DataFrame(index=p.index)
    for t in design_terms(schema, covariates):
        if t.kind == "categorical":
            x[t.name] = (p[t.column] == t.level).astype(float).where(p[t.column].notna())
        else:
            x[t.name] = pd.to_numeric(p[t.column], errors="coerce")
    x["T"], x["E"] = p["T"], p["E"]
    if strata:
        x["hospital"] = p["hospital"]
    return x.dropna()


def _step_at(curve: dict, times) -> np.ndarray:
    """A KM curve (step function) evaluated at `times`."""
    t = np.asarray(curve["time"])
    i = np.searchsorted(t, np.asarray(times, float), side="right") - 1
    return np.asarray(curve["survival"])[np.clip(i, 0, None)]


def _timed(cfg: dict, tables: dict, analyses: list[str]) -> tuple[dict, float]:
    c = {**cfg, "analysis": {**cfg["analysis"], "analyses": analyses}}
    t0 = time.perf_counter()
    doc, _ = run_analysis_in_process(c, tables)
    return doc, round(time.perf_counter() - t0, 3)


def bench_cohort(df: pd.DataFrame, use_case: str, endpoint: str, group_by: str) -> dict:
    schema = get_schema(use_case)
    settings = {**default_analysis(use_case, endpoint), "group_by": group_by, "time_step_months": STEP}
    out: dict = {"patients": int(len(df)), "group_by": group_by, "covariates": settings["covariates"]}
    for n_hosp, fractions in SPLITS.items():
        parts = cohorts.split_nodes(df, fractions, seed=n_hosp, stratify=f"{endpoint}_event")
        tables = {f"H{i + 1}": t for i, t in enumerate(parts)}
        cfg = {"task": "analysis", "use_case": use_case, "endpoint": endpoint, "min_nodes": 1,
               "min_cell_count": 0, "analysis": settings}
        res: dict = {}
        d_desc, res["describe_seconds"] = _timed(cfg, tables, ["describe"])
        d_km, res["km_logrank_seconds"] = _timed(cfg, tables, ["km", "logrank"])
        d_cox, res["cox_seconds"] = _timed(cfg, tables, ["cox"])
        d_scox, res["cox_stratified_seconds"] = _timed({**cfg, "analysis": {**settings, "cox_stratified": True}},
                                                       tables, ["cox"])
        p = _pooled(tables, endpoint)
        p["group"] = _group_of(p, schema, group_by)
        # describe: exact mean / SD; quantiles against the pooled rows within their stated bound
        mean_d = sd_d = 0.0
        q_ratio = 0.0
        full = pd.concat(tables.values(), ignore_index=True)
        for col, s in d_desc["describe"]["pooled"]["numeric"].items():
            v = pd.to_numeric(full[col], errors="coerce").dropna()
            if len(v) < 2:
                continue
            mean_d = max(mean_d, abs(s["mean"] - v.mean()))
            sd_d = max(sd_d, abs(s["sd"] - v.std(ddof=1)))
            q_ratio = max(q_ratio, abs(s["median"] - v.median()) / s["quantile_error"])
        res["describe_max_abs_diff_mean"] = mean_d
        res["describe_max_abs_diff_sd"] = sd_d
        res["describe_median_error_over_stated_bound"] = round(q_ratio, 4)
        # Kaplan-Meier and medians
        km_d = med_d = 0.0
        for g, curve in d_km["km"]["groups"].items():
            rows = p[p.group == g]
            kmf = KaplanMeierFitter().fit(rows["T"], rows["E"])
            ref = kmf.survival_function_.iloc[:, 0]
            km_d = max(km_d, float(np.abs(np.asarray(curve["survival"]) - ref.loc[curve["time"]].to_numpy()).max()),
                       float(np.abs(np.asarray(curve["lower"])
                                    - kmf.confidence_interval_.iloc[:, 0].loc[curve["time"]].to_numpy()).max()))
            m_ref = kmf.median_survival_time_
            m = curve["median"]
            med_d = max(med_d, 0.0 if (m is None and np.isinf(m_ref)) else abs((m or np.inf) - m_ref))
        res["km_max_abs_diff_survival_and_band"] = km_d
        res["km_max_abs_diff_median"] = med_d
        groups = d_km["logrank"]["groups"]
        q = p[p.group.isin(groups)]
        lr = multivariate_logrank_test(q["T"], q.group, q["E"])
        res["logrank_abs_diff_statistic"] = abs(d_km["logrank"]["statistic"] - lr.test_statistic)
        res["logrank_statistic"] = round(float(lr.test_statistic), 4)
        res["logrank_stratified_abs_diff_statistic"] = abs(
            d_km["logrank_stratified"]["statistic"] - _stratified_logrank(q, groups))
        # Cox, pooled and stratified by hospital
        for key, doc, strata in (("cox", d_cox, False), ("cox_stratified", d_scox, True)):
            frame = _cox_frame(p, schema, settings["covariates"], strata)
            ref = CoxPHFitter().fit(frame, "T", "E", strata=["hospital"] if strata else None,
                                    fit_options={"precision": 1e-12})
            res[f"{key}_max_abs_diff_coef"] = float(np.abs(np.asarray(doc["cox"]["coef"]) - ref.params_.values).max())
            res[f"{key}_max_abs_diff_se"] = float(np.abs(np.asarray(doc["cox"]["se"])
                                                         - ref.standard_errors_.values).max())
            res[f"{key}_max_abs_diff_p"] = float(np.abs(np.asarray(doc["cox"]["p"]) - ref.summary["p"].values).max())
            res[f"{key}_newton_rounds"] = doc["cox"]["iterations"]
        # what small-cell coarsening at 5 changes (against the exact federated figures above)
        k5, res["all_analyses_min_cell_5_seconds"] = _timed({**cfg, "min_cell_count": 5}, tables,
                                                            ["describe", "km", "logrank", "cox"])
        res["min_cell_5"] = {
            "km_max_abs_diff_survival_vs_exact": max(
                float(np.abs(_step_at(c, d_km["km"]["groups"][g]["time"])
                             - np.asarray(d_km["km"]["groups"][g]["survival"])).max())
                for g, c in k5["km"]["groups"].items() if g in d_km["km"]["groups"]),
            "km_groups_left_out_at_a_hospital": sum("too few patients" in n for n in k5["notes"]),
            "km_patients_coarsened": sum(int(n.split(" coarsened ")[1].split()[0]) for n in k5["notes"]
                                         if n.startswith("Kaplan-Meier") and " coarsened " in n),
            "cox_max_abs_diff_coef_vs_exact": float(np.abs(np.asarray(k5["cox"]["coef"])
                                                           - np.asarray(d_cox["cox"]["coef"])).max()),
            "logrank_statistic": round(k5["logrank"]["statistic"], 4),
            "notes": len(k5["notes"]),
        }
        for step in (3.0, 12.0):  # the same threshold on a coarser grid (against the exact fit on it)
            c_step = {**cfg, "analysis": {**settings, "time_step_months": step}}
            exact, _ = _timed(c_step, tables, ["km", "logrank", "cox"])
            coarse, _ = _timed({**c_step, "min_cell_count": 5}, tables, ["km", "logrank", "cox"])
            res[f"min_cell_5_grid_{step:g}_months"] = {
                "km_max_abs_diff_survival_vs_exact": max(
                    float(np.abs(_step_at(c, exact["km"]["groups"][g]["time"])
                                 - np.asarray(exact["km"]["groups"][g]["survival"])).max())
                    for g, c in coarse["km"]["groups"].items() if g in exact["km"]["groups"]),
                "cox_max_abs_diff_coef_vs_exact": float(np.abs(np.asarray(coarse["cox"]["coef"])
                                                               - np.asarray(exact["cox"]["coef"])).max()),
                "logrank_statistic_exact": round(exact["logrank"]["statistic"], 4),
                "logrank_statistic": round(coarse["logrank"]["statistic"], 4),
                "km_groups_left_out_at_a_hospital": sum("too few patients" in n for n in coarse["notes"]),
            }
        out[f"{n_hosp}_hospitals"] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--scd-rows", type=int, default=3000)
    a = ap.parse_args(argv)
    out: dict = {"time_step_months": STEP, "goal": 1e-6}
    if (DATA / "df_clinical.tsv").exists():
        from fl_engine.datasets.iwgpm import load_iwgpm

        df = load_iwgpm(DATA)
        df = df[df.os_months.notna() & df.os_event.isin([0, 1])].reset_index(drop=True)
        out["iwgpm_mds"] = bench_cohort(df, "MDS", "os", "sex")
    else:
        out["iwgpm_mds"] = f"skipped: IWG-PM cohort not found at {DATA} (needs ../shared/data)"
    try:
        scd_schema = get_schema("SCD")
    except KeyError:
        scd_schema = None
    if not hasattr(cohorts, "generate_scd_cohort") or scd_schema is None:
        out["scd"] = "skipped: no SCD generator yet"
    else:
        df = cohorts.generate_scd_cohort(a.scd_rows, seed=0)
        group = "genotype" if "genotype" in scd_schema.feature_names else "sex"
        out["scd"] = bench_cohort(df, "SCD", "os", group)
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for key, v in out.items():
            print(f"{key}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
