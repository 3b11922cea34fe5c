"""MDS prognostic scores: IPSS-R, age-adjusted IPSS-RA and IPSS-M.

Inputs use the column names of ``fedhaem_kernel.schema.MDS``: hb g/dL, plt 10^9/L, anc 10^9/L,
bm_blast %, age years, cyto_ipssr (Very Good .. Very Poor), del5q, del7_7q, del17_17p, complex,
tp53_count (number of TP53 mutations), tp53_maxvaf (fraction 0-1), tp53_loh and genes by symbol.
Missing values are NaN; nothing missing is ever read as 0.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import CYTO_IPSSR, MDS

from ._common import (as_frame, binary, categorical, cut_right, missing_reason, numeric, require,
                      shape_output)

IPSSR_CATEGORIES = ("Very Low", "Low", "Intermediate", "High", "Very High")
IPSSM_CATEGORIES = ("Very Low", "Low", "Moderate Low", "Moderate High", "High", "Very High")
_IPSSR_CUTS = (1.5, 3.0, 4.5, 6.0)
_IPSSM_CUTS = (-1.5, -0.5, 0.0, 0.5, 1.5)
_CYTO_POINTS = {c: float(i) for i, c in enumerate(CYTO_IPSSR)}  # Very Good 0 .. Very Poor 4

# IPSS-M model (Bernard et al., NEJM Evidence 2022, doi:10.1056/EVIDoa2200008), as published in
# the authors' reference code papaemmelab/ipssm (R/IPSSMmain.R: betaValues, meanValues,
# bestValues, worstValues; R/IPSSMprocess.R; R/Nres.R) and papaemmelab/ipssm-api
# (src/utils/betasRiskScore.ts): term -> (beta, mean in the IWG-PM cohort, best, worst).
IPSSM_TERMS: dict[str, tuple[float, float, float, float]] = {
    "HB1": (-0.171, 9.87, 20.0, 4.0),
    "TRANSF_PLT100": (-0.222, 1.41, 2.5, 0.0),
    "BLAST5": (0.352, 0.922, 0.0, 4.0),
    "CYTOVEC": (0.287, 1.39, 0.0, 4.0),
    "TP53multi": (1.18, 0.071, 0.0, 1.0),
    "FLT3": (0.798, 0.0108, 0.0, 1.0),
    "MLL_PTD": (0.798, 0.0247, 0.0, 1.0),
    "SF3B1_5q": (0.504, 0.0166, 0.0, 1.0),
    "NPM1": (0.430, 0.0112, 0.0, 1.0),
    "RUNX1": (0.423, 0.126, 0.0, 1.0),
    "NRAS": (0.417, 0.0362, 0.0, 1.0),
    "ETV6": (0.391, 0.0216, 0.0, 1.0),
    "IDH2": (0.379, 0.0429, 0.0, 1.0),
    "CBL": (0.295, 0.0473, 0.0, 1.0),
    "EZH2": (0.270, 0.0588, 0.0, 1.0),
    "U2AF1": (0.247, 0.0866, 0.0, 1.0),
    "SRSF2": (0.239, 0.158, 0.0, 1.0),
    "DNMT3A": (0.221, 0.161, 0.0, 1.0),
    "ASXL1": (0.213, 0.252, 0.0, 1.0),
    "KRAS": (0.202, 0.0271, 0.0, 1.0),
    "SF3B1_alpha": (-0.0794, 0.186, 1.0, 0.0),
    "Nres2": (0.231, 0.388, 0.0, 2.0),
}
IPSSM_MAIN_GENES = ("MLL_PTD", "FLT3", "ASXL1", "CBL", "DNMT3A", "ETV6", "EZH2", "IDH2", "KRAS",
                    "NPM1", "NRAS", "RUNX1", "SF3B1", "SRSF2", "U2AF1")
IPSSM_RESIDUAL_GENES = ("BCOR", "BCORL1", "CEBPA", "ETNK1", "GATA2", "GNB1", "IDH1", "NF1",
                        "PHF6", "PPM1D", "PRPF8", "PTPN11", "SETBP1", "STAG2", "WT1")
_NRES_REF = 0.388
_TP53_VAF_LOH = 0.55  # a TP53 VAF above this implies loss of heterozygosity (R: maxvafloh)

IPSSR_INPUTS = ("hb", "plt", "anc", "bm_blast", "cyto_ipssr")
IPSSM_INPUTS = (("hb", "plt", "bm_blast", "cyto_ipssr", "del5q", "del7_7q", "del17_17p",
                 "complex", "tp53_count", "tp53_maxvaf", "tp53_loh")
                + IPSSM_MAIN_GENES + IPSSM_RESIDUAL_GENES)

# IPSS-M reference CSV (ipssm R package / ipssm-api) column -> schema column
REFERENCE_COLUMNS = {
    "HB": "hb", "PLT": "plt", "ANC": "anc", "BM_BLAST": "bm_blast", "AGE": "age",
    "CYTO_IPSSR": "cyto_ipssr", "TP53mut": "tp53_count", "TP53maxvaf": "tp53_maxvaf",
    "TP53loh": "tp53_loh",
}


def from_ipssm_reference(df: pd.DataFrame) -> pd.DataFrame:
    """Rename an IPSS-M reference table (HB, PLT, BM_BLAST, ANC, AGE, CYTO_IPSSR, TP53mut,
    TP53maxvaf, TP53loh, genes) to schema columns; TP53mut "0"/"1"/"2 or more" becomes
    tp53_count 0/1/2; IWG-PM cytogenetic labels ("Int", "Very-Poor") become the schema's
    ("Intermediate", "Very Poor"); "NA"/"" become NaN. Other columns are kept as they are."""
    out = df.rename(columns=REFERENCE_COLUMNS).replace({"NA": np.nan, "": np.nan})
    if "cyto_ipssr" in out.columns:
        out["cyto_ipssr"] = out["cyto_ipssr"].map(
            lambda v: v if not isinstance(v, str) else
            {"Int": "Intermediate"}.get(v.strip(), v.strip().replace("-", " ")))
    if "tp53_count" in out.columns:
        raw = out["tp53_count"]
        text = raw.where(raw.isna(), raw.astype(str).str.strip())
        mapping = {"0": 0.0, "1": 1.0, "2 or more": 2.0, "2": 2.0, "0.0": 0.0, "1.0": 1.0,
                   "2.0": 2.0}
        bad = text.notna() & ~text.isin(list(mapping))
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"row {pos}, column 'TP53mut': {raw.iloc[pos]!r} is not "
                             "0, 1 or '2 or more'")
        out["tp53_count"] = text.map(mapping).astype(float)
    return out


def _ipssr_frame(df: pd.DataFrame) -> pd.DataFrame:
    require(df, IPSSR_INPUTS, "IPSS-R")
    hb = numeric(df, "hb", MDS, "IPSS-R")
    plt = numeric(df, "plt", MDS, "IPSS-R")
    anc = numeric(df, "anc", MDS, "IPSS-R")
    blast = numeric(df, "bm_blast", MDS, "IPSS-R")
    cyto = categorical(df, "cyto_ipssr", CYTO_IPSSR, "IPSS-R")
    # Greenberg et al., Blood 2012;120:2454, Table 3 (points per prognostic variable)
    p_cyto = cyto.map(_CYTO_POINTS).astype(float)
    p_blast = np.select([blast <= 2, blast < 5, blast <= 10, blast > 10], [0.0, 1.0, 2.0, 3.0],
                        np.nan)
    p_hb = np.select([hb >= 10, hb >= 8, hb < 8], [0.0, 1.0, 1.5], np.nan)
    p_plt = np.select([plt >= 100, plt >= 50, plt < 50], [0.0, 0.5, 1.0], np.nan)
    p_anc = np.select([anc >= 0.8, anc < 0.8], [0.0, 0.5], np.nan)
    score = p_cyto.to_numpy() + p_blast + p_hb + p_plt + p_anc
    out = pd.DataFrame(index=df.index)
    out["ipssr_score"] = score
    out["ipssr_cat"] = cut_right(score, _IPSSR_CUTS, IPSSR_CATEGORIES)
    out["ipssr_missing"] = missing_reason(
        {"hb": hb, "plt": plt, "anc": anc, "bm_blast": blast, "cyto_ipssr": cyto}, df.index)
    return out


def ipssr(data):
    """IPSS-R score (0-10) and category (Greenberg et al., Blood 2012).

    data: DataFrame (one row per patient) or one-patient dict with hb g/dL, plt 10^9/L,
    anc 10^9/L, bm_blast %, cyto_ipssr. Returns ipssr_score, ipssr_cat (Very Low <= 1.5 < Low
    <= 3 < Intermediate <= 4.5 < High <= 6 < Very High) and ipssr_missing (the reason when an
    input is missing; score and category are then NaN).
    """
    df, single = as_frame(data)
    return shape_output(_ipssr_frame(df), single)


def ipssra(data):
    """IPSS-R plus the age-adjusted IPSS-RA (Greenberg et al., Blood 2012).

    IPSS-RA = IPSS-R + (age - 70) * (0.05 - 0.005 * IPSS-R), age in years, same cut-points.
    Returns the ``ipssr`` columns plus ipssra_score, ipssra_cat, ipssra_missing.
    """
    df, single = as_frame(data)
    out = _ipssr_frame(df)
    require(df, ("age",), "IPSS-RA")
    age = numeric(df, "age", MDS, "IPSS-RA")
    raw = out["ipssr_score"].to_numpy(dtype=float)
    adj = raw + (age.to_numpy() - 70.0) * (0.05 - raw * 0.005)
    out["ipssra_score"] = adj
    out["ipssra_cat"] = cut_right(adj, _IPSSR_CUTS, IPSSR_CATEGORIES)
    reasons = []
    for base, no_age in zip(out["ipssr_missing"], age.isna()):
        names = base.replace("missing: ", "").split(", ") if base else []
        names += ["age"] if no_age else []
        reasons.append("missing: " + ", ".join(names) if names else "")
    out["ipssra_missing"] = reasons
    return shape_output(out, single)


def _eq(s: pd.Series, v: float) -> np.ndarray:
    return (s == v).to_numpy()


def _ipssm_process(df: pd.DataFrame, hb_floor: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model variables (NaN where unknown) and Nres2 per scenario, as R/IPSSMprocess.R."""
    require(df, IPSSM_INPUTS, "IPSS-M")
    name = "IPSS-M"
    hb = numeric(df, "hb", MDS, name)
    plt = numeric(df, "plt", MDS, name)
    blast = numeric(df, "bm_blast", MDS, name)
    cyto = categorical(df, "cyto_ipssr", CYTO_IPSSR, name)
    b = {c: binary(df, c, name) for c in ("del5q", "del7_7q", "del17_17p", "complex", "tp53_loh")
         + IPSSM_MAIN_GENES + IPSSM_RESIDUAL_GENES}
    count = numeric(df, "tp53_count", MDS, name)
    fractional = count.notna() & ((count % 1) != 0)
    if fractional.any():
        pos = int(np.flatnonzero(fractional.to_numpy())[0])
        raise ValueError(f"IPSS-M: row {pos}, column 'tp53_count': {count.iloc[pos]} is not a "
                         "whole number of mutations")
    vaf = numeric(df, "tp53_maxvaf", MDS, name)

    x = pd.DataFrame(index=df.index, dtype=float)
    x["HB1"] = np.clip(hb.to_numpy(), hb_floor, 20.0)
    x["TRANSF_PLT100"] = np.minimum(plt.to_numpy(), 250.0) / 100.0
    x["BLAST5"] = np.minimum(blast.to_numpy(), 20.0) / 5.0
    x["CYTOVEC"] = cyto.map(_CYTO_POINTS).astype(float).to_numpy()

    # SF3B1 with isolated del(5q) (SF3B1_5q), and SF3B1 without co-mutation (SF3B1_alpha):
    # a term is 0 as soon as one known value rules it out, 1 when all are known to fit.
    sf = b["SF3B1"]
    sf5q = np.full(len(df), np.nan)
    sf5q[_eq(sf, 0) | _eq(b["del5q"], 0) | _eq(b["del7_7q"], 1) | _eq(b["complex"], 1)] = 0.0
    sf5q[_eq(sf, 1) & _eq(b["del5q"], 1) & _eq(b["del7_7q"], 0) & _eq(b["complex"], 0)] = 1.0
    co = ("SRSF2", "STAG2", "BCOR", "BCORL1", "RUNX1", "NRAS")
    alpha = np.full(len(df), np.nan)
    alpha[_eq(sf, 0) | (sf5q == 1) | np.any([_eq(b[g], 1) for g in co], axis=0)] = 0.0
    alpha[_eq(sf, 1) & (sf5q == 0) & np.all([_eq(b[g], 0) for g in co], axis=0)] = 1.0
    x["SF3B1_5q"] = sf5q
    x["SF3B1_alpha"] = alpha

    # TP53 multi-hit: >= 2 mutations, or 1 mutation with LOH (measured, VAF > 0.55 or del(17p))
    loh = b["tp53_loh"].to_numpy().copy()
    loh[(vaf > _TP53_VAF_LOH).to_numpy() | _eq(b["del17_17p"], 1)] = 1.0
    c = count.to_numpy()
    multi = np.full(len(df), np.nan)
    multi[(c == 0) | ((c == 1) & (loh == 0))] = 0.0
    multi[(c >= 2) | ((c >= 1) & (loh == 1))] = 1.0
    x["TP53multi"] = multi
    for g in IPSSM_MAIN_GENES:
        if g != "SF3B1":
            x[g] = b[g].to_numpy()

    # residual genes: min(N, 2) generalised to missing genes (R/Nres.R, calculateNres2)
    res = np.column_stack([b[g].to_numpy() for g in IPSSM_RESIDUAL_GENES])
    m = np.isnan(res).sum(axis=1)
    s = res.shape[1] - m
    ns = np.nansum(res, axis=1)
    nres = pd.DataFrame(index=df.index)
    nres["best"] = np.minimum(ns, 2.0)
    nres["worst"] = np.minimum(ns + m, 2.0)
    nres["mean"] = np.minimum(ns, 2.0) + np.maximum((2.0 - ns) / 2.0 * (m / (s + m)) * _NRES_REF,
                                                    0.0)
    return x, nres


def _r_round(x: np.ndarray, digits: int) -> np.ndarray:
    """Round half away from zero after removing binary noise (R's and JS's visible behaviour)."""
    scaled = np.round(np.asarray(x, dtype=float) * 10 ** digits, 9)
    return np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) / 10 ** digits


def ipssm(data, *, hb_floor: float = 4.0, worst_hb: float | None = None, max_range: float = 1.0):
    """IPSS-M risk score and category (Bernard et al., NEJM Evidence 2022).

    data: DataFrame (one row per patient) or one-patient dict with the schema's MDS columns
    (``IPSSM_INPUTS``; unknown values NaN). Score = sum_k beta_k (x_k - mean_k) / ln 2 over the
    terms of ``IPSSM_TERMS``, rounded to 2 decimals, cut at -1.5, -0.5, 0, 0.5, 1.5 into
    ``IPSSM_CATEGORIES``. Missing model terms are filled three ways: best (least risk), mean
    (cohort mean) and worst (most risk) give ipssm_{score,cat}_{best,mean,worst}. As the authors'
    IPSSMannotate, ipssm_score is the mean-scenario score when worst - best <= max_range, and
    ipssm_cat the mean-scenario category when that holds or best and worst categories agree;
    otherwise NaN, with the reason in ipssm_comment.

    hb_floor: Hb (g/dL) is clipped to [hb_floor, 20]; the R package uses 4 (default), the
    ipssm-api web calculator does not clip (hb_floor=0). worst_hb: Hb imputed in the worst
    scenario (default hb_floor, or 4 if hb_floor is below it; ipssm-api uses 2).
    """
    df, single = as_frame(data)
    x, nres = _ipssm_process(df, hb_floor)
    worst_fill = dict((k, v[3]) for k, v in IPSSM_TERMS.items())
    worst_fill["HB1"] = worst_hb if worst_hb is not None else max(hb_floor, 4.0)
    fills = {
        "best": {k: v[2] for k, v in IPSSM_TERMS.items()},
        "mean": {k: v[1] for k, v in IPSSM_TERMS.items()},
        "worst": worst_fill,
    }
    beta = np.array([IPSSM_TERMS[k][0] for k in IPSSM_TERMS])
    mean = np.array([IPSSM_TERMS[k][1] for k in IPSSM_TERMS])
    terms = [k for k in IPSSM_TERMS if k != "Nres2"]
    out = pd.DataFrame(index=df.index)
    for scen, fill in fills.items():
        xs = x[terms].fillna({k: fill[k] for k in terms}).copy()
        xs["Nres2"] = nres[scen].to_numpy()
        raw = ((xs[list(IPSSM_TERMS)].to_numpy() - mean) * beta).sum(axis=1) / math.log(2)
        score = _r_round(raw, 2)
        out[f"ipssm_score_{scen}"] = score
        out[f"ipssm_cat_{scen}"] = cut_right(score, _IPSSM_CUTS, IPSSM_CATEGORIES)
    spread = out["ipssm_score_worst"] - out["ipssm_score_best"]
    narrow = (spread <= max_range).to_numpy()
    stable = (out["ipssm_cat_worst"] == out["ipssm_cat_best"]).to_numpy()
    out["ipssm_score"] = np.where(narrow, out["ipssm_score_mean"], np.nan)
    out["ipssm_cat"] = np.where(narrow | stable, out["ipssm_cat_mean"].astype(object), np.nan)
    missing = x[terms].isna()
    missing["Nres2"] = (nres["best"] != nres["worst"]).to_numpy()
    listed = missing.apply(lambda r: ", ".join(c for c in missing.columns if r[c]), axis=1) \
        if len(missing) else pd.Series([], dtype=object)
    comment = np.where(spread == 0, "no uncertainty",
                       np.where(narrow, "range (worst - best) below limit",
                                np.where(stable, "range (worst - best) above limit, but stable "
                                         "category", "range (worst - best) above limit")))
    out["ipssm_comment"] = [c if not terms_ else f"{c}; missing terms: {terms_}"
                            for c, terms_ in zip(comment, listed)]
    return shape_output(out, single)
