"""Exact federated Cox on the IWG-PM cohort: federated (3 and 5 hospitals) against the pooled
fit, and what a coarser time grid changes.

    python bench/cox_equivalence.py [--json] [--penalizer 0.01]

Cohort: ../shared/data/mds_iwgpm patients with overall survival (months), the MDS schema's
clinical + cytogenetic + genomic features encoded by one Preprocessor fitted on the pooled rows
(standardised numerics, missing-value indicators), hospitals split 60/30/10 and 45/20/15/10/10.

- grid = the pooled distinct event times: fl_engine.analytics.cox.fit_federated against
  scikit-survival's Breslow fit (coefficients; the same L2 penalty) and against lifelines
  (coefficients and standard errors; lifelines uses Efron's ties, so that comparison is on the
  times made distinct by a tiny deterministic jitter, 1e-6 months x rank);
- grid = 1, 3 and 12 months (what a study sends; no raw times leave a hospital), with and
  without small-cell merging at 10 patients: the largest coefficient difference to the exact
  fit, and the pooled test C of each fit;
- stratified by hospital (gradients and Hessians only) against lifelines with strata (on the
  jittered, distinct times too).
Seconds are wall times of whole fits on a shared 2-core machine.
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

from fedhaem_kernel.metrics import harrell_c  # noqa: E402
from fl_engine.analytics import cox  # noqa: E402
from fl_engine.cohort import split_nodes  # noqa: E402
from fl_engine.datasets.iwgpm import load_iwgpm  # noqa: E402
from fl_engine.features import Preprocessor, resolve_columns  # noqa: E402
from fedhaem_kernel.schema import get_schema  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mds_iwgpm"
SPLITS = {3: (0.6, 0.3, 0.1), 5: (0.45, 0.2, 0.15, 0.1, 0.1)}


def _design(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    schema = get_schema("MDS")
    cols = resolve_columns(schema, df.columns, ["clinical", "cytogenetic", "genomic"])
    pre = Preprocessor.fit("MDS", df, cols)
    x = pre.transform(df).astype(np.float64)
    keep = x.std(0) > 0
    x = x[:, keep]
    x = (x - x.mean(0)) / x.std(0, ddof=1)  # lifelines' own normalisation is then the identity
    names = [n for n, k in zip(pre.output_names, keep) if k]
    return x, df.os_months.to_numpy(float), df.os_event.to_numpy(float), names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--penalizer", type=float, default=0.01)
    a = ap.parse_args(argv)
    if not (DATA / "df_clinical.tsv").exists():
        print(f"IWG-PM cohort not found at {DATA} (needs ../shared/data)", file=sys.stderr)
        return 2
    df = load_iwgpm(DATA)
    df = df[df.os_months.notna() & df.os_event.isin([0, 1])].reset_index(drop=True)
    x, d, e, names = _design(df)
    pen = a.penalizer
    out: dict = {"patients": int(len(x)), "events": int(e.sum()), "features": len(names), "penalizer": pen,
                 "distinct_event_times": int(len(np.unique(d[e > 0])))}

    def parts_of(k, xx=x, dd=d):
        tables = split_nodes(pd.DataFrame({"i": np.arange(len(xx)), "os_event": e}), SPLITS[k], seed=k)
        return [(xx[t.i.to_numpy()], dd[t.i.to_numpy()], e[t.i.to_numpy()]) for t in tables]

    exact = cox.event_time_grid(d, e)
    t0 = time.perf_counter()
    pooled = cox.fit_federated([(x, d, e)], pen, edges=exact)
    out["pooled_seconds"] = round(time.perf_counter() - t0, 2)
    out["pooled_iterations"] = pooled.iterations
    try:
        from sksurv.linear_model import CoxPHSurvivalAnalysis  # optional reference
        from sksurv.util import Surv  # optional reference

        sk = CoxPHSurvivalAnalysis(alpha=pen * len(x), ties="breslow", tol=1e-12, n_iter=200).fit(
            x, Surv.from_arrays(e.astype(bool), d))
        out["pooled_vs_sksurv_breslow_max_coef_diff"] = float(np.abs(pooled.coef - sk.coef_).max())
    except ImportError:
        out["pooled_vs_sksurv_breslow_max_coef_diff"] = None
    for k in (3, 5):
        t0 = time.perf_counter()
        fed = cox.fit_federated(parts_of(k), pen, edges=exact)
        out[f"federated_{k}_exact_grid"] = {
            "max_coef_diff_vs_pooled": float(np.abs(fed.coef - pooled.coef).max()),
            "max_se_diff_vs_pooled": float(np.abs(fed.se - pooled.se).max()),
            "iterations": fed.iterations, "seconds": round(time.perf_counter() - t0, 2)}
    try:
        import lifelines  # optional reference

        jitter = d + 1e-6 * np.argsort(np.argsort(d, kind="stable"), kind="stable")
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(T=jitter, E=e)
        ll = lifelines.CoxPHFitter(penalizer=pen).fit(frame, "T", "E", fit_options={"precision": 1e-12})
        fed = cox.fit_federated(parts_of(3, dd=jitter), pen, edges=cox.event_time_grid(jitter, e))
        out["federated_3_vs_lifelines_distinct_times"] = {
            "max_coef_diff": float(np.abs(fed.coef - ll.params_.to_numpy()).max()),
            "max_se_diff": float(np.abs(fed.se - ll.standard_errors_.to_numpy()).max())}
        strata = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts_of(3))])
        order = np.concatenate([t for t in _indices(3, e)])
        ls = lifelines.CoxPHFitter(penalizer=pen).fit(
            pd.DataFrame(x[order], columns=frame.columns[:-2]).assign(T=jitter[order], E=e[order], s=strata),
            "T", "E", strata=["s"], fit_options={"precision": 1e-12})
        t0 = time.perf_counter()
        fs = cox.fit_federated(parts_of(3, dd=jitter), pen, stratified=True)
        out["stratified_3_vs_lifelines_strata"] = {
            "max_coef_diff": float(np.abs(fs.coef - ls.params_.to_numpy()).max()),
            "max_se_diff": float(np.abs(fs.se - ls.standard_errors_.to_numpy()).max()),
            "seconds": round(time.perf_counter() - t0, 2)}
    except ImportError:
        pass
    c_exact = harrell_c(d, e, x @ pooled.coef)
    out["grid_effect"] = {"exact": {"c_index_pooled_rows": round(float(c_exact), 5)}}
    for step in (1.0, 3.0, 12.0):
        for k_min in (0, 10):
            t0 = time.perf_counter()
            f = cox.fit_federated(parts_of(3), pen, step_months=step, min_cell=k_min)
            out["grid_effect"][f"{step:g}_months" + (f"_min_cell_{k_min}" if k_min else "")] = {
                "max_coef_diff_vs_exact": round(float(np.abs(f.coef - pooled.coef).max()), 5),
                "max_hr_ratio_vs_exact": round(float(np.exp(np.abs(f.coef - pooled.coef)).max()), 5),
                "c_index_pooled_rows": round(float(harrell_c(d, e, x @ f.coef)), 5),
                "patients_moved_by_merging": f.moved, "seconds": round(time.perf_counter() - t0, 2)}
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for key, v in out.items():
            print(f"{key}: {v}")
    return 0


def _indices(k, e):
    tables = split_nodes(pd.DataFrame({"i": np.arange(len(e)), "os_event": e}), SPLITS[k], seed=k)
    return [t.i.to_numpy() for t in tables]


if __name__ == "__main__":
    raise SystemExit(main())
