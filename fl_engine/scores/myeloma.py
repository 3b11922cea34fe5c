"""Myeloma staging: ISS (Greipp et al., JCO 2005) and R-ISS (Palumbo et al., JCO 2015).

Inputs use ``fedhaem_kernel.schema.MM`` columns: b2m mg/L, albumin g/dL, ldh and ldh_uln U/L,
del17p, t_4_14, t_14_16 (iFISH, 0/1). Unknown values are NaN: the stage is NaN only when a
missing value could change it, and the missing inputs are named.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import MM

from ._common import as_frame, binary, numeric, require, shape_output

STAGES = ("I", "II", "III")


def _iss(df: pd.DataFrame, name: str):
    require(df, ("b2m", "albumin"), name)
    b2m = numeric(df, "b2m", MM, name).to_numpy()
    alb = numeric(df, "albumin", MM, name).to_numpy()
    stage = np.full(len(df), np.nan)
    stage[b2m >= 5.5] = 3
    stage[(b2m >= 3.5) & (b2m < 5.5)] = 2
    stage[(b2m < 3.5) & (alb >= 3.5)] = 1
    stage[(b2m < 3.5) & (alb < 3.5)] = 2
    reason = np.where(np.isnan(b2m), "missing: b2m",
                      np.where(np.isnan(stage), "missing: albumin", ""))
    return stage, reason


def _label(stage: np.ndarray) -> np.ndarray:
    return np.array([STAGES[int(s) - 1] if not np.isnan(s) else np.nan for s in stage],
                    dtype=object)


def iss(data):
    """International Staging System: I b2m < 3.5 mg/L and albumin >= 3.5 g/dL; III b2m >= 5.5
    mg/L; II otherwise. Returns iss_stage (I/II/III) and iss_missing."""
    df, single = as_frame(data)
    stage, reason = _iss(df, "ISS")
    out = pd.DataFrame({"iss_stage": _label(stage), "iss_missing": reason}, index=df.index)
    return shape_output(out, single)


def riss(data):
    """Revised ISS (Palumbo et al., JCO 2015;33:2863).

    R-ISS I: ISS I, standard-risk iFISH (no del17p, t_4_14, t_14_16) and LDH <= ULN;
    R-ISS III: ISS III and (high-risk iFISH or LDH > ULN); R-ISS II: all others.
    Returns iss_stage, riss_stage (I/II/III) and riss_missing.
    """
    df, single = as_frame(data)
    name = "R-ISS"
    stage, iss_reason = _iss(df, name)
    require(df, ("ldh", "ldh_uln", "del17p", "t_4_14", "t_14_16"), name)
    ldh = numeric(df, "ldh", MM, name).to_numpy()
    uln = numeric(df, "ldh_uln", MM, name).to_numpy()
    ca = {c: binary(df, c, name).to_numpy() for c in ("del17p", "t_4_14", "t_14_16")}
    high_ldh = np.where(np.isnan(ldh) | np.isnan(uln), np.nan, (ldh > uln).astype(float))
    ca_vals = np.column_stack(list(ca.values()))
    # any high-risk abnormality known present -> 1; all known absent -> 0; else unknown
    high_ca = np.where((ca_vals == 1).any(axis=1), 1.0,
                       np.where((ca_vals == 0).all(axis=1), 0.0, np.nan))
    adverse = np.where((high_ca == 1) | (high_ldh == 1), 1.0,
                       np.where((high_ca == 0) & (high_ldh == 0), 0.0, np.nan))
    r = np.full(len(df), np.nan)
    r[stage == 2] = 2
    r[(stage == 1) & (adverse == 0)] = 1
    r[(stage == 1) & (adverse == 1)] = 2
    r[(stage == 3) & (adverse == 1)] = 3
    r[(stage == 3) & (adverse == 0)] = 2
    reasons = []
    for i in range(len(df)):
        if not np.isnan(r[i]):
            reasons.append("")
        elif np.isnan(stage[i]):
            reasons.append(iss_reason[i])
        else:
            names = [c for c, v in ca.items() if np.isnan(v[i])]
            names += [c for c, v in (("ldh", ldh), ("ldh_uln", uln)) if np.isnan(v[i])]
            reasons.append("missing: " + ", ".join(names))
    out = pd.DataFrame({"iss_stage": _label(stage), "riss_stage": _label(r),
                        "riss_missing": reasons}, index=df.index)
    return shape_output(out, single)
