"""The conventional prognostic scores of each use case as one risk number per patient (higher =
worse), for comparing a model's concordance with the score clinicians use today on the same
held-out patients, and how many patients each score covered.

MDS: IPSS-M and IPSS-R scores; AML: ELN 2022 group (favourable 0 < intermediate 1 < adverse 2);
CMML: CPSS and CPSS-Mol scores; myeloma: ISS and R-ISS stages (I 1 < II 2 < III 3). A score
whose input columns are absent from the table is left out; a patient whose score cannot be
decided is NaN, and `coverage` counts the patients a score was computable on.

Missing inputs follow each score's own rules. IPSS-M fills missing terms three ways (best,
mean, worst; Bernard et al. 2022): the risk is the mean-scenario score where the authors' rule
accepts it (worst - best <= 1, or best and worst in the same category), NaN otherwise, and the
spread worst - best is reported (`coverage_report`). ELN 2022 reads lesions the hospital
declared never tested per lesion (fl_engine.scores.aml) and leaves APL unscored. The point
scores (IPSS-R, CPSS, CPSS-Mol, ISS, R-ISS) are decided when no value of the missing inputs
could change them.

A comparison of C-indices is made only when a score was computable on at least
``COVERAGE_MIN`` (80 %) of the test patients; below it the comparison is refused and says so
(`coverage_text`).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .aml import ELN2022_CATEGORIES, declared_not_tested, eln2022
from .cmml import CPSS_CATEGORIES, cpss, cpss_mol
from .mds import IPSSM_CATEGORIES, IPSSR_CATEGORIES, ipssm, ipssr
from .myeloma import iss, riss

COVERAGE_MIN = 0.80

_ELN_ORDER = {"Favorable": 0.0, "Intermediate": 1.0, "Adverse": 2.0}
_STAGE_ORDER = {"I": 1.0, "II": 2.0, "III": 3.0}

LABELS = {"ipss_m": "IPSS-M", "ipss_r": "IPSS-R", "eln2022": "ELN 2022", "cpss": "CPSS",
          "cpss_mol": "CPSS-Mol", "iss": "ISS", "riss": "R-ISS"}

# (name, function, output column, mapping of categories to ranks or None for a numeric score,
# column saying why a patient is undecided)
_SCORES = {
    "MDS": (("ipss_m", ipssm, "ipssm_score_mean", None, "ipssm_comment"),
            ("ipss_r", ipssr, "ipssr_score", None, "ipssr_missing")),
    "AML": (("eln2022", eln2022, "eln2022_cat", _ELN_ORDER, "eln2022_missing"),),
    "CMML": (("cpss", cpss, "cpss_score", None, "cpss_missing"),
             ("cpss_mol", cpss_mol, "cpss_mol_score", None, "cpss_mol_missing")),
    "MM": (("iss", iss, "iss_stage", _STAGE_ORDER, "iss_missing"),
           ("riss", riss, "riss_stage", _STAGE_ORDER, "riss_missing")),
}


def _run(fn, df: pd.DataFrame, not_tested: frozenset[str]) -> pd.DataFrame:
    """One score's output frame; ELN 2022 gets the declared-not-tested fields (the others read
    them as missing, which is their rule)."""
    return fn(df, not_tested=not_tested) if fn is eln2022 else fn(df)


def _risk(name: str, res: pd.DataFrame, column: str, order) -> np.ndarray:
    values = res[column]
    if order is None:
        risk = pd.to_numeric(values, errors="coerce").to_numpy(float)
    else:
        risk = np.array([order.get(v, np.nan) if isinstance(v, str) else np.nan for v in values])
    if name == "ipss_m":  # the authors' rule: a category only when the scenarios agree enough
        accepted = np.array([isinstance(c, str) for c in res["ipssm_cat"]], dtype=bool)
        risk = np.where(accepted, risk, np.nan)
    return risk


def _why(name: str, res: pd.DataFrame, why_column: str, risk: np.ndarray) -> list[str]:
    """Per patient: '' when computable, else the reason (excluded, range, missing fields)."""
    out = []
    for i, r in enumerate(risk):
        if not np.isnan(r):
            out.append("")
        elif name == "eln2022" and res["eln2022_excluded"].iloc[i]:
            out.append("excluded: " + res["eln2022_excluded"].iloc[i])
        elif name == "ipss_m":  # the comment ends "; missing terms: HB1, TP53multi"
            terms = str(res["ipssm_comment"].iloc[i]).partition("missing terms: ")[2]
            out.append("missing: " + terms if terms else "scenario range (worst - best) above 1")
        else:
            out.append(str(res[why_column].iloc[i]) or "not computable")
    return out


def conventional_details(df: pd.DataFrame, use_case: str, not_tested=None) -> dict[str, dict]:
    """{score name: {"risk": (n,) risk, NaN where not computable, "why": per patient '' or the
    reason, "frame": the score's own output}} for the scores of `use_case` whose inputs are
    columns of `df`. not_tested: fields the hospital never tests (default the table's
    ``fedhaem_kernel.schema.NOT_TESTED_ATTR``)."""
    declared = declared_not_tested(df, not_tested)
    out: dict[str, dict] = {}
    for name, fn, column, order, why in _SCORES.get(use_case.upper(), ()):
        try:
            res = _run(fn, df, declared)
        except (KeyError, ValueError):  # input columns absent or unusable in this table
            continue
        risk = _risk(name, res, column, order)
        out[name] = {"risk": risk, "why": _why(name, res, why, risk), "frame": res}
    return out


def conventional_risks(df: pd.DataFrame, use_case: str, not_tested=None) -> dict[str, np.ndarray]:
    """{score name: risk per row (n,), NaN where not computable} for the scores of `use_case`
    whose inputs are columns of `df` (a score with absent input columns is left out)."""
    return {k: v["risk"] for k, v in conventional_details(df, use_case, not_tested).items()}


def coverage(risks: dict[str, np.ndarray]) -> dict[str, dict]:
    """{score: {"n": patients computable (non-NaN), "of": patients, "fraction": n / of,
    "sufficient": fraction >= COVERAGE_MIN}} from conventional_risks' output."""
    out = {}
    for name, risk in risks.items():
        r = np.asarray(risk, dtype=float)
        n, of = int(np.sum(~np.isnan(r))), int(r.size)
        frac = n / of if of else 0.0
        out[name] = {"n": n, "of": of, "fraction": frac, "sufficient": bool(of and frac >= COVERAGE_MIN)}
    return out


def pooled_coverage(per_node: dict[str, dict]) -> dict[str, dict]:
    """Coverage over hospitals from each one's comparison figures ({node: {"n_holdout",
    "<score>_n" or "<score>_suppressed"}}): {score: {"n", "of", "fraction", "sufficient",
    "suppressed_nodes"}}. n sums the counts reported (a lower bound when a hospital withheld a
    small count), of the held-out patients of every hospital that answered for the score."""
    out: dict[str, dict] = {}
    for score in LABELS:
        n = of = suppressed = 0
        seen = False
        for m in per_node.values():
            if f"{score}_n" in m:
                n += int(m[f"{score}_n"])
            elif m.get(f"{score}_suppressed"):
                suppressed += 1
            else:
                continue
            seen = True
            of += int(m.get("n_holdout", 0))
        if seen:
            frac = n / of if of else 0.0
            out[score] = {"n": n, "of": of, "fraction": frac, "sufficient": bool(of and frac >= COVERAGE_MIN),
                          "suppressed_nodes": suppressed}
    return out


def coverage_text(name: str, n: int, of: int, c_index: float | None = None,
                  what: str = "test patients") -> str:
    """One line for a score's comparison: "IPSS-M C 0.710 on 143 of 154 test patients", or
    below COVERAGE_MIN the refusal: "ELN 2022: not compared: computable on 51 of 154 test
    patients (33%), under the 80% a comparison needs"."""
    label = LABELS.get(name, name)
    frac = n / of if of else 0.0
    if not of or frac < COVERAGE_MIN:
        return (f"{label}: not compared: computable on {n} of {of} {what} ({frac:.0%}), under the "
                f"{COVERAGE_MIN:.0%} a comparison needs")
    if c_index is None:
        return f"{label}: computable on {n} of {of} {what}; C not computed"
    return f"{label} C {c_index:.3f} on {n} of {of} {what}"


def coverage_report(df: pd.DataFrame, use_case: str, not_tested=None, top: int = 5) -> dict[str, dict]:
    """Coverage of each score on `df` with the reasons patients were not computable, counted
    per missing field ({"reasons": {reason: patients}}, the `top` most frequent) and, for
    IPSS-M, the scenario spread worst - best ({"spread": {"median", "p90", "max",
    "above_limit"}}). Aggregates only: for a node's own report or a benchmark."""
    details = conventional_details(df, use_case, not_tested)
    cov = coverage({k: v["risk"] for k, v in details.items()})
    for name, d in details.items():
        reasons: Counter = Counter()
        for why in d["why"]:
            if not why:
                continue
            if why.startswith("missing: "):
                reasons.update(f"missing {f}" for f in why[len("missing: "):].split(", "))
            else:
                reasons[why] += 1
        cov[name]["reasons"] = dict(reasons.most_common(top))
        if name == "ipss_m":
            f = d["frame"]
            spread = (f["ipssm_score_worst"] - f["ipssm_score_best"]).to_numpy(float)
            ok = spread[~np.isnan(spread)]
            cov[name]["spread"] = {
                "median": round(float(np.median(ok)), 2) if ok.size else None,
                "p90": round(float(np.quantile(ok, 0.9)), 2) if ok.size else None,
                "max": round(float(ok.max()), 2) if ok.size else None,
                "above_limit": int(np.sum(ok > 1.0)),
                "none": int(np.sum(ok == 0)),
            }
    return cov


_STAGES = ("I", "II", "III")
# (name, function, category column, categories in increasing risk)
_GROUPS = {
    "MDS": (("ipss_m", ipssm, "ipssm_cat", IPSSM_CATEGORIES), ("ipss_r", ipssr, "ipssr_cat", IPSSR_CATEGORIES)),
    "AML": (("eln2022", eln2022, "eln2022_cat", ELN2022_CATEGORIES),),
    "CMML": (("cpss", cpss, "cpss_cat", CPSS_CATEGORIES), ("cpss_mol", cpss_mol, "cpss_mol_cat", CPSS_CATEGORIES)),
    "MM": (("iss", iss, "iss_stage", _STAGES), ("riss", riss, "riss_stage", _STAGES)),
}


def group_layout(use_case: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(score name, its categories in increasing risk)] of `use_case`, in a fixed order."""
    return [(name, cats) for name, _fn, _col, cats in _GROUPS.get(use_case.upper(), ())]


def conventional_groups(df: pd.DataFrame, use_case: str, not_tested=None) -> dict[str, np.ndarray]:
    """{score name: category index per row (n,) into group_layout's categories, -1 where
    undecided} for the scores of `use_case` whose inputs are columns of `df`."""
    declared = declared_not_tested(df, not_tested)
    out: dict[str, np.ndarray] = {}
    for name, fn, column, cats in _GROUPS.get(use_case.upper(), ()):
        try:
            res = _run(fn, df, declared)
        except (KeyError, ValueError):
            continue
        index = {c: i for i, c in enumerate(cats)}
        out[name] = np.array([index.get(v, -1) if isinstance(v, str) else -1 for v in res[column]], dtype=int)
    return out
