"""A small simulated MDS-like cohort for tests, demos and the portal's fixtures (no real data)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .spec import ColumnSpec, TableSpec

TOY_GENES = ("SF3B1", "U2AF1", "ASXL1", "SRSF2", "TET2", "TP53", "RUNX1", "DNMT3A")
TOY_CYTO = ("Very Good", "Good", "Intermediate", "Poor", "Very Poor")


def toy_spec() -> TableSpec:
    """Spec of :func:`toy_cohort` (OS in months)."""
    cols = [
        ColumnSpec("age", "numeric", "clinical", minimum=18, maximum=100, integer=True),
        ColumnSpec("sex", "categorical", "clinical", ("F", "M")),
        ColumnSpec("hb", "numeric", "clinical", minimum=3, maximum=18),
        ColumnSpec("plt", "numeric", "clinical", minimum=0, maximum=2000, log=True),
        ColumnSpec("bm_blast", "numeric", "clinical", minimum=0, maximum=30, log=True),
        ColumnSpec("cyto_ipssr", "categorical", "cytogenetic", TOY_CYTO),
        ColumnSpec("del5q", "binary", "cytogenetic"),
    ] + [ColumnSpec(g, "binary", "genomic") for g in TOY_GENES] + [
        ColumnSpec("os_months", "numeric", "survival", minimum=0, maximum=240, log=True),
        ColumnSpec("os_event", "binary", "survival"),
    ]
    return TableSpec(tuple(cols), duration="os_months", event="os_event",
                     quasi_identifiers=("age", "sex", "cyto_ipssr"))


def toy_cohort(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """n simulated patients: labs, a cytogenetic group, 8 genes with a co-occurring pair
    (ASXL1-SRSF2) and a mutually exclusive pair (SF3B1-U2AF1), and OS (months, event)."""
    rng = np.random.default_rng(seed)
    sf3b1 = rng.random(n) < 0.25
    u2af1 = (~sf3b1) & (rng.random(n) < 0.15)
    asxl1 = rng.random(n) < 0.2
    srsf2 = np.where(asxl1, rng.random(n) < 0.45, rng.random(n) < 0.08)
    tet2 = rng.random(n) < 0.25
    tp53 = rng.random(n) < 0.1
    runx1 = rng.random(n) < 0.1
    dnmt3a = rng.random(n) < 0.12
    age = np.clip(np.round(rng.normal(70, 10, n)), 18, 100)
    sex = np.where(rng.random(n) < 0.6, "M", "F")
    blast = np.clip(rng.gamma(1.2, 3.0, n) + 4 * tp53 + 3 * runx1, 0, 30).round(1)
    hb = np.clip(rng.normal(10.2 - 0.8 * tp53 + 0.5 * sf3b1, 1.6), 3, 18).round(1)
    plt = np.clip(np.exp(rng.normal(4.8 - 0.4 * tp53, 0.8)), 2, 2000).round(0)
    cyto_score = 1.2 + 2.0 * tp53 + rng.normal(0, 0.8, n)
    cyto = np.asarray(TOY_CYTO, dtype=object)[np.clip(np.round(cyto_score), 0, 4).astype(int)]
    del5q = ((rng.random(n) < 0.08) | (tp53 & (rng.random(n) < 0.3))).astype(int)
    lp = 0.04 * (age - 70) - 0.25 * (hb - 10) + 0.08 * blast + 1.1 * tp53 + 0.5 * asxl1 + 0.4 * runx1 - 0.4 * sf3b1
    t_event = rng.exponential(40 * np.exp(-lp))
    t_cens = rng.uniform(6, 120, n)
    t = np.clip(np.minimum(t_event, t_cens), 0.1, 240).round(2)
    df = pd.DataFrame({"age": age, "sex": sex, "hb": hb, "plt": plt, "bm_blast": blast,
                       "cyto_ipssr": cyto, "del5q": del5q})
    for g, v in zip(TOY_GENES, (sf3b1, u2af1, asxl1, srsf2, tet2, tp53, runx1, dnmt3a)):
        df[g] = v.astype(int)
    df["os_months"] = t
    df["os_event"] = (t_event <= t_cens).astype(int)
    return df
