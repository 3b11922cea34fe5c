"""Small synthetic hospital exports for the ETL tests (seeded; no real patients)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def canonical_cohort(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Patients in schema names and units (Hb g/dL, counts 10^9/L, times months)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "patient_id": [f"P{i:04d}" for i in range(n)],
        "age": rng.integers(30, 95, n).astype(float),
        "sex": rng.choice(["M", "F"], n),
        "hb": rng.normal(9.8, 1.5, n).round(1).clip(4, 16),
        "plt": rng.integers(10, 600, n).astype(float),
        "anc": rng.gamma(2.0, 1.2, n).round(2).clip(0.05, 20),
        "wbc": rng.normal(4.5, 1.2, n).round(2).clip(0.5, 30),
        "bm_blast": rng.integers(0, 19, n).astype(float),
        "cyto_ipssr": rng.choice(["Very Good", "Good", "Intermediate", "Poor", "Very Poor"], n),
        "del5q": rng.integers(0, 2, n).astype(float),
        "TP53": rng.integers(0, 2, n).astype(float),
        "ASXL1": rng.integers(0, 2, n).astype(float),
        "SF3B1": rng.integers(0, 2, n).astype(float),
        "hma": rng.integers(0, 2, n).astype(float),
        "os_months": rng.uniform(1, 90, n).round(3),
        "os_event": rng.integers(0, 2, n).astype(float),
    })
    return df


SEX_WORDS = {"M": "male", "F": "female"}
CYTO_WORDS = {"Very Good": "very-good", "Good": "good", "Intermediate": "int", "Poor": "poor",
              "Very Poor": "very poor"}


def hospital_export(df: pd.DataFrame) -> pd.DataFrame:
    """The same patients as a differently named export: other names, units and codings."""
    return pd.DataFrame({
        "Patient": df.patient_id,
        "Alter": df.age.astype(int),
        "Geschlecht": df.sex.map(SEX_WORDS),
        "Hb (g/L)": df.hb * 10,
        "Thrombozyten": (df.plt * 1000).round(0).astype(int),       # per microlitre, no unit
        "Neutrophils (G/L)": df.anc,
        "WBC [10^3/uL]": df.wbc,
        "BM blasts (%)": df.bm_blast,
        "IPSS-R cyto": df.cyto_ipssr.map(CYTO_WORDS),
        "del(5q)": df.del5q.map({1.0: "yes", 0.0: "no"}),
        "mut_TP53": df.TP53.astype(int),
        "ASXL1": df.ASXL1.map({1.0: "mutated", 0.0: "wt"}),
        "SF3B1_mut": df.SF3B1.astype(int),
        "HMA": df.hma.map({1.0: "ja", 0.0: "nein"}),
        "OS_days": df.os_months * 30.4375,
        "vital status": df.os_event.map({1.0: "dead", 0.0: "alive"}),
    })
