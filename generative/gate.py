"""Release gate and data card for synthetic cohorts.

A cohort is releasable only when every privacy threshold holds. Each check reports the measured
value, the threshold, the comparison and the margin (positive = room left, negative = failed by
that much), so the data manager sees which test failed and by how much. Defaults are strict;
definitions in docs/synthetic.md.
"""
from __future__ import annotations

import datetime as _dt
import math

from pydantic import BaseModel, ConfigDict, Field


class GateThresholds(BaseModel):
    """Privacy thresholds (JSON-storable). Ratios compare the synthetic rows with real holdout
    patients the generator never saw, both measured against the training patients. The ratio
    floors (0.90) sit just above the sampling noise of a node's holdout 5th percentile (a node
    with 150 holdout patients estimates it from its ~7 closest), so an honest generator is not
    refused by chance while a copying one (ratio near 0) always is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nndr_p5_ratio_min: float = Field(0.90, ge=0, le=2)
    dcr_p5_ratio_min: float = Field(0.90, ge=0, le=2)
    exact_copy_excess_max: float = Field(0.0, ge=0, le=1)
    mia_auc_max: float = Field(0.60, ge=0.5, le=1)
    rare_combination_ratio_max: float = Field(1.5, ge=0)


def _check(name, measured, threshold, kind, detail):
    ok = measured is not None and math.isfinite(measured)
    if not ok:
        return {"name": name, "measured": None, "threshold": threshold, "comparison": kind,
                "passed": False, "margin": None, "detail": f"{detail}: not measured"}
    margin = measured - threshold if kind == ">=" else threshold - measured
    return {"name": name, "measured": float(measured), "threshold": float(threshold), "comparison": kind,
            "passed": bool(margin >= 0), "margin": float(margin), "detail": detail}


def _ratio(a, b):
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return float("nan")
    if b <= 0:
        return math.inf if a > 0 else 1.0
    return a / b


def evaluate_gate(report: dict, thresholds: GateThresholds | None = None) -> dict:
    """Pure gate on a pooled SAFE report (``generative.safe.manager_pool``) -> {"passed",
    "checks": [{name, measured, threshold, comparison, passed, margin, detail}], "thresholds"}."""
    th = thresholds or GateThresholds()
    p = report.get("privacy") or {}
    checks = [
        _check("nndr_p5_ratio", _ratio(p.get("synthetic_nndr_p5"), p.get("holdout_nndr_p5")),
               th.nndr_p5_ratio_min, ">=",
               f"5th percentile NNDR of synthetic rows {p.get('synthetic_nndr_p5')} over holdout "
               f"baseline {p.get('holdout_nndr_p5')}"),
        _check("dcr_p5_ratio", _ratio(p.get("synthetic_dcr_p5"), p.get("holdout_dcr_p5")),
               th.dcr_p5_ratio_min, ">=",
               f"5th percentile distance to closest record, synthetic {p.get('synthetic_dcr_p5')} "
               f"over holdout {p.get('holdout_dcr_p5')}"),
        _check("exact_copy_excess",
               (p.get("synthetic_exact_copy_rate", float("nan")) - p.get("holdout_exact_copy_rate", float("nan"))),
               th.exact_copy_excess_max, "<=",
               f"share of synthetic rows identical to a training patient "
               f"({p.get('synthetic_exact_copy_rate')}) minus the holdout rate ({p.get('holdout_exact_copy_rate')})"),
        _check("mia_auc", p.get("mia_auc"), th.mia_auc_max, "<=",
               "distance-based membership-inference AUC (0.5 = attacker guesses)"),
        _check("rare_combination_ratio",
               _ratio(p.get("synthetic_rare_combination_rate"), p.get("holdout_rare_combination_rate")),
               th.rare_combination_ratio_max, "<=",
               f"share of synthetic rows in quasi-identifier cells with < k real patients "
               f"({p.get('synthetic_rare_combination_rate')}) over the holdout share "
               f"({p.get('holdout_rare_combination_rate')})"),
    ]
    return {"passed": all(c["passed"] for c in checks), "checks": checks,
            "failed": [c["name"] for c in checks if not c["passed"]], "thresholds": th.model_dump()}


def build_data_card(*, generator: str, generator_params: dict, study: str, run: str | int,
                    rounds: int | None, report: dict, gate: dict, n_rows: int,
                    created: _dt.datetime | None = None, extra: dict | None = None) -> dict:
    """The data card shipped with a released cohort (JSON-ready dict)."""
    created = created or _dt.datetime.now(_dt.timezone.utc)
    card = {
        "format": "fedhaem-synthetic-data-card/1",
        "generator": generator,
        "generator_params": generator_params,
        "study": study,
        "run": run,
        "rounds": rounds,
        "rows": int(n_rows),
        "created": created.isoformat(),
        "scores": {k: report.get(k) for k in ("csf", "gsf", "nndr_p5", "tstr_c_index")},
        "privacy": report.get("privacy", {}),
        "gate": {"passed": gate["passed"], "failed": gate["failed"],
                 "checks": [{k: c[k] for k in ("name", "measured", "threshold", "comparison", "passed")}
                            for c in gate["checks"]]},
        "thresholds": gate["thresholds"],
        "validated_against": {"nodes": report.get("n_nodes"), "real_patients": report.get("n_real")},
        "definitions": "docs/synthetic.md",
    }
    if generator == "sdv_ctgan":
        card["licence_note"] = "generated with sdv CTGAN (BUSL-1.1)"
    if extra:
        card.update(extra)
    return card
