"""ETL throughput: rows (patients) per second for 10,000 synthetic MDS patients, from a hospital
CSV export plus a long variant file to FHIR bundles (validated), the ML-ready table and the
quality report; and, when ../shared/data is present, the full IWG-PM cohort.

    .venv/bin/python bench/etl_throughput.py [--n 10000] [--seed 0] [--no-iwgpm]

Prints measured numbers only; single process (the ETL is single-threaded).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.pipeline import run_etl  # noqa: E402

GENES = ["TP53", "ASXL1", "SF3B1", "SRSF2", "RUNX1", "TET2", "DNMT3A", "U2AF1", "EZH2", "STAG2"]


def synthetic_export(n: int, seed: int, folder: Path) -> list[Path]:
    """A hospital-style export: renamed columns, g/L Hb, platelets per microlitre, days."""
    rng = np.random.default_rng(seed)
    ids = [f"H{i:06d}" for i in range(n)]
    pat = pd.DataFrame({
        "Patient": ids, "Age at diagnosis": rng.integers(30, 95, n),
        "Sex": rng.choice(["male", "female"], n),
        "Hb (g/L)": rng.normal(98, 15, n).round(0).clip(40, 160),
        "Platelets": rng.integers(10_000, 600_000, n),
        "ANC": rng.gamma(2.0, 1.2, n).round(2).clip(0.05, 20), "WBC": rng.normal(4.5, 1.2, n).round(2).clip(0.5, 30),
        "BM blasts (%)": rng.integers(0, 19, n), "PB blasts (%)": rng.integers(0, 5, n),
        "Karyotype": "46,XY", "IPSS-R cyto": rng.choice(["good", "int", "poor", "very poor", "very good"], n),
        "del5q": rng.integers(0, 2, n), "complex": rng.integers(0, 2, n),
        "HMA": rng.choice(["yes", "no"], n), "Lenalidomide": rng.integers(0, 2, n),
        "OS_days": rng.integers(10, 4000, n), "vital status": rng.choice(["alive", "dead"], n),
        "wsi_0": rng.normal(size=n), "wsi_1": rng.normal(size=n), "wsi_2": rng.normal(size=n),
    })
    n_var = int(n * 1.5)
    var = pd.DataFrame({"patient_id": rng.choice(ids, n_var), "gene": rng.choice(GENES, n_var),
                        "protein_change": "p.X1Y", "vaf": rng.uniform(2, 60, n_var).round(1)})
    p1, p2 = folder / "patients.csv", folder / "variants.csv"
    pat.to_csv(p1, index=False)
    var.to_csv(p2, index=False)
    return [p1, p2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-iwgpm", action="store_true")
    args = ap.parse_args()
    print(f"cpu cores visible: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = synthetic_export(args.n, args.seed, tmp)
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_etl("mds", files, tmp / "out")
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = res.report["summary"]
        print(f"synthetic CSV, {args.n} patients: {dt:.1f} s wall, {args.n / dt:.0f} rows/s; "
              f"{cpu:.1f} s CPU, {args.n / cpu:.0f} rows/CPU-s "
              f"({res.report['fhir']['resources']} FHIR resources validated, {s['patients']} in table, "
              f"{s['rejected_patients']} rejected, {s['unit_conversions']} unit conversions)")
        iw = ROOT / ".." / "shared" / "data" / "mds_iwgpm"
        if not args.no_iwgpm and (iw / "df_clinical.tsv").exists():
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_etl("mds", [iw], tmp / "iwgpm")
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            n_in = res.report["input_rows"]
            print(f"IWG-PM (4 TSV files), {n_in} patients: {dt:.1f} s wall, {n_in / dt:.0f} rows/s; "
                  f"{cpu:.1f} s CPU, {n_in / cpu:.0f} rows/CPU-s "
                  f"({res.report['fhir']['resources']} FHIR resources, {len(res.table)} in table, "
                  f"{res.report['summary']['rejected_patients']} rejected)")


if __name__ == "__main__":
    main()
