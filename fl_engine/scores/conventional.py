"""The conventional prognostic scores of each use case as one risk number per patient (higher =
worse), for comparing a model's concordance with the score clinicians use today on the same
held-out patients.

MDS: IPSS-M (mean scenario for missing genes) and IPSS-R scores; AML: ELN 2022 group
(favourable 0 < intermediate 1 < adverse 2); CMML: CPSS and CPSS-Mol scores; myeloma: ISS and
R-ISS stages (I 1 < II 2 < III 3). A score whose input columns are absent from the table is left
out; a patient whose score cannot be decided (missing inputs) is NaN and must be dropped by the
caller, which then says how many patients the score was computed on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .aml import ELN2022_CATEGORIES, eln2022
from .cmml import CPSS_CATEGORIES, cpss, cpss_mol
from .mds import IPSSM_CATEGORIES, IPSSR_CATEGORIES, ipssm, ipssr
from .myeloma import iss, riss

_ELN_ORDER = {"Favorable": 0.0, "Intermediate": 1.0, "Adverse": 2.0}
_STAGE_ORDER = {"I": 1.0, "II": 2.0, "III": 3.0}

LABELS = {"ipss_m": "IPSS-M", "ipss_r": "IPSS-R", "eln2022": "ELN 2022", "cpss": "CPSS",
          "cpss_mol": "CPSS-Mol", "iss": "ISS", "riss": "R-ISS"}

# (name, function, output column, mapping of categories to ranks or None for a numeric score)
_SCORES = {
    "MDS": (("ipss_m", ipssm, "ipssm_score_mean", None), ("ipss_r", ipssr, "ipssr_score", None)),
    "AML": (("eln2022", eln2022, "eln2022_cat", _ELN_ORDER),),
    "CMML": (("cpss", cpss, "cpss_score", None), ("cpss_mol", cpss_mol, "cpss_mol_score", None)),
    "MM": (("iss", iss, "iss_stage", _STAGE_ORDER), ("riss", riss, "riss_stage", _STAGE_ORDER)),
}


def conventional_risks(df: pd.DataFrame, use_case: str) -> dict[str, np.ndarray]:
    """{score name: risk per row (n,), NaN where undecided} for the scores of `use_case` whose
    inputs are columns of `df` (a score with absent input columns is left out)."""
    out: dict[str, np.ndarray] = {}
    for name, fn, column, order in _SCORES.get(use_case.upper(), ()):
        try:
            res = fn(df)
        except (KeyError, ValueError):  # input columns absent or unusable in this table
            continue
        values = res[column]
        if order is None:
            out[name] = pd.to_numeric(values, errors="coerce").to_numpy(float)
        else:
            out[name] = np.array([order.get(v, np.nan) if isinstance(v, str) else np.nan for v in values])
    return out


_STAGES = ("I", "II", "III")
# (name, function, category column, categories in increasing risk)
_GROUPS = {
    "MDS": (("ipss_m", ipssm, "ipssm_cat_mean", IPSSM_CATEGORIES), ("ipss_r", ipssr, "ipssr_cat", IPSSR_CATEGORIES)),
    "AML": (("eln2022", eln2022, "eln2022_cat", ELN2022_CATEGORIES),),
    "CMML": (("cpss", cpss, "cpss_cat", CPSS_CATEGORIES), ("cpss_mol", cpss_mol, "cpss_mol_cat", CPSS_CATEGORIES)),
    "MM": (("iss", iss, "iss_stage", _STAGES), ("riss", riss, "riss_stage", _STAGES)),
}


def group_layout(use_case: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(score name, its categories in increasing risk)] of `use_case`, in a fixed order."""
    return [(name, cats) for name, _fn, _col, cats in _GROUPS.get(use_case.upper(), ())]


def conventional_groups(df: pd.DataFrame, use_case: str) -> dict[str, np.ndarray]:
    """{score name: category index per row (n,) into group_layout's categories, -1 where
    undecided} for the scores of `use_case` whose inputs are columns of `df`."""
    out: dict[str, np.ndarray] = {}
    for name, fn, column, cats in _GROUPS.get(use_case.upper(), ()):
        try:
            res = fn(df)
        except (KeyError, ValueError):
            continue
        index = {c: i for i, c in enumerate(cats)}
        out[name] = np.array([index.get(v, -1) if isinstance(v, str) else -1 for v in res[column]], dtype=int)
    return out
