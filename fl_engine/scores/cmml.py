"""CMML prognostic scores: CPSS (Such et al., Blood 2013) and CPSS-Mol (Elena et al., Blood 2016).

Inputs use ``fedhaem_kernel.schema.CMML`` columns: who_cmml (CMML-0/1/2), bm_blast %, pb_blast %,
wbc 10^9/L, cyto_cpss (Low/Intermediate/High, Such et al., Haematologica 2011: low = normal or
isolated -Y; high = +8, chromosome 7 abnormalities or complex; intermediate = others),
rbc_transfusion (0/1) and ASXL1, NRAS, RUNX1, SETBP1 (0/1). Unknown values are NaN: the score
is then NaN unless no value of the missing inputs could change it, and likewise the category.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import CMML

from ._bounds import bounded_result, component
from ._common import as_frame, binary, categorical, numeric, require, shape_output

CPSS_CATEGORIES = ("Low", "Intermediate-1", "Intermediate-2", "High")
_CPSS_CUTS = (0.0, 1.0, 3.0)  # Low 0, Int-1 1, Int-2 2-3, High >= 4
_CYTO_POINTS = {"Low": 0.0, "Intermediate": 1.0, "High": 2.0}
_WBC_MP = 13.0  # FAB MP-CMML when WBC >= 13 x 10^9/L


def _cmml2(df: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(points, missing) for WHO CMML-2 (1) vs CMML-1 (0).

    CPSS used WHO 2008: CMML-2 = PB blasts 5-19% or BM blasts 10-19%. WHO 2016 CMML-0 and
    CMML-1 both fall in 2008 CMML-1. Without who_cmml the blasts decide when they can.
    """
    require(df, ("who_cmml", "bm_blast", "pb_blast"), name)
    who = categorical(df, "who_cmml", ("CMML-0", "CMML-1", "CMML-2"), name)
    bm = numeric(df, "bm_blast", CMML, name).to_numpy()
    pb = numeric(df, "pb_blast", CMML, name).to_numpy()
    from_who = who.map({"CMML-0": 0.0, "CMML-1": 0.0, "CMML-2": 1.0}).astype(float).to_numpy()
    by_blasts = np.where((bm >= 10) | (pb >= 5), 1.0,
                         np.where((bm < 10) & (pb < 5), 0.0, np.nan))
    pts = np.where(np.isnan(from_who), by_blasts, from_who)
    return pts, np.isnan(pts)


def cpss(data):
    """CPSS score (0-5) and category (Such et al., Blood 2013;121:3005).

    Points: WHO CMML-2 1; FAB MP-CMML (wbc >= 13 x 10^9/L) 1; cyto_cpss Intermediate 1, High 2;
    RBC transfusion dependence 1. Low 0, Intermediate-1 1, Intermediate-2 2-3, High 4-5.
    data: DataFrame or one-patient dict. Returns cpss_score, cpss_cat, cpss_missing.
    """
    df, single = as_frame(data)
    name = "CPSS"
    require(df, ("wbc", "cyto_cpss", "rbc_transfusion"), name)
    who_pts, who_na = _cmml2(df, name)
    wbc = numeric(df, "wbc", CMML, name).to_numpy()
    cyto = categorical(df, "cyto_cpss", tuple(_CYTO_POINTS), name)
    cyto_pts = cyto.map(_CYTO_POINTS).astype(float).to_numpy()
    td = binary(df, "rbc_transfusion", name).to_numpy()
    parts = {
        "who_cmml": component(who_pts, who_na, 0, 1),
        "wbc": component((wbc >= _WBC_MP).astype(float), np.isnan(wbc), 0, 1),
        "cyto_cpss": component(cyto_pts, np.isnan(cyto_pts), 0, 2),
        "rbc_transfusion": component(td, np.isnan(td), 0, 1),
    }
    out = bounded_result("cpss", df.index, parts, _CPSS_CUTS, CPSS_CATEGORIES)
    return shape_output(out, single)


def _genetic_risk(score: np.ndarray) -> np.ndarray:
    # genetic score 0 low (0), 1 int-1 (1), 2 int-2 (2), >= 3 high (3)
    return np.minimum(score, 3.0)


def cpss_mol(data):
    """CPSS-Mol score (0-6) and category (Elena et al., Blood 2016;128:1408).

    Genetic score: cyto_cpss Intermediate 1, High 2; ASXL1 1; NRAS 1; RUNX1 2; SETBP1 1;
    genetic risk group = min(genetic score, 3) (low, int-1, int-2, high = 0-3 points).
    CPSS-Mol = genetic risk points + bm_blast >= 5% 1 + wbc >= 13 x 10^9/L 1 + RBC transfusion
    dependence 1; Low 0, Intermediate-1 1, Intermediate-2 2-3, High >= 4.
    Returns cpss_mol_score, cpss_mol_cat, cpss_mol_missing, and cpss_mol_genetic_risk (0-3).
    """
    df, single = as_frame(data)
    name = "CPSS-Mol"
    require(df, ("cyto_cpss", "ASXL1", "NRAS", "RUNX1", "SETBP1", "bm_blast", "wbc",
                 "rbc_transfusion"), name)
    cyto = categorical(df, "cyto_cpss", tuple(_CYTO_POINTS), name)
    cyto_pts = cyto.map(_CYTO_POINTS).astype(float).to_numpy()
    genes = {g: binary(df, g, name).to_numpy() for g in ("ASXL1", "NRAS", "RUNX1", "SETBP1")}
    weight = {"ASXL1": 1.0, "NRAS": 1.0, "RUNX1": 2.0, "SETBP1": 1.0}
    gparts = {"cyto_cpss": component(cyto_pts, np.isnan(cyto_pts), 0, 2)}
    for g, v in genes.items():
        gparts[g] = component(v * weight[g], np.isnan(v), 0, weight[g])
    g_lo = _genetic_risk(np.sum([p[0] for p in gparts.values()], axis=0))
    g_hi = _genetic_risk(np.sum([p[1] for p in gparts.values()], axis=0))
    bm = numeric(df, "bm_blast", CMML, name).to_numpy()
    wbc = numeric(df, "wbc", CMML, name).to_numpy()
    td = binary(df, "rbc_transfusion", name).to_numpy()
    parts = {
        "genetic risk": (g_lo, g_hi),
        "bm_blast": component((bm >= 5).astype(float), np.isnan(bm), 0, 1),
        "wbc": component((wbc >= _WBC_MP).astype(float), np.isnan(wbc), 0, 1),
        "rbc_transfusion": component(td, np.isnan(td), 0, 1),
    }
    out = bounded_result("cpss_mol", df.index, parts, _CPSS_CUTS, CPSS_CATEGORIES)
    # name the inputs actually missing rather than the derived genetic group
    both = {**gparts, **{k: v for k, v in parts.items() if k != "genetic risk"}}
    names = [", ".join(k for k, (a, b) in both.items() if a[i] != b[i]) for i in range(len(df))]
    out["cpss_mol_missing"] = [("missing: " + m) if m else "" for m in names]
    out["cpss_mol_genetic_risk"] = np.where(g_lo == g_hi, g_lo, np.nan)
    return shape_output(out, single)
