"""The settings of an analysis study (issue 17): which analyses, which columns, the time grid.

`validate_analysis(use_case, endpoint, settings)` returns the complete, validated settings dict
(defaults filled in from the use case's schema, never hard-coded column lists) or raises
ValueError naming every bad field. `default_analysis(use_case, endpoint)` is the defaults alone.
The portal stores the result in ``Study.analysis``; the engine receives it as the run-contract
setting ``analysis`` (task "analysis"). The small-cell threshold is the study's privacy option
``min_cell_count``, not a field here.
"""
from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedhaem_kernel.schema import UseCaseSchema, get_schema

ANALYSES = ("describe", "km", "logrank", "cox")
HOSPITAL = "hospital"  # group_by value: group by the hospital a patient belongs to

# Cox default covariates: the first few of these that the use case's schema has (clinical
# variables a haematologist adjusts for first).
_COX_PREFERENCE = ("age", "sex", "hb", "hbf", "bm_blast", "ldh", "b2m", "albumin", "plt", "wbc")
_COX_DEFAULT_SIZE = 4

__all__ = ["ANALYSES", "HOSPITAL", "AnalysisSettings", "default_analysis", "validate_analysis",
           "numeric_columns", "categorical_columns"]


class AnalysisSettings(BaseModel):
    """The raw fields (types and bounds); column names are checked against the schema afterwards."""

    model_config = ConfigDict(extra="forbid")

    analyses: list[str] = Field(default_factory=lambda: list(ANALYSES))
    group_by: str = ""
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    covariates: list[str] | None = None
    cox_stratified: bool = False
    cox_penalizer: float = Field(0.0, ge=0.0, le=100.0)
    time_step_months: float = Field(1.0, gt=0.0, le=120.0)
    quantile_bins: int = Field(200, ge=10, le=5000)
    at_risk_every_months: float = Field(12.0, gt=0.0, le=600.0)


def _schema(use_case: str) -> UseCaseSchema:
    try:
        return get_schema(str(use_case))
    except KeyError as err:
        raise ValueError(f"analysis: use_case: {err.args[0]}") from None


def numeric_columns(schema: UseCaseSchema, clinical_only: bool = False) -> list[str]:
    return [f.name for f in schema.features
            if f.kind == "numeric" and (not clinical_only or f.group == "clinical")]


def categorical_columns(schema: UseCaseSchema, clinical_only: bool = False) -> list[str]:
    return [f.name for f in schema.features
            if f.kind in ("categorical", "binary") and (not clinical_only or f.group == "clinical")]


def _default_covariates(schema: UseCaseSchema) -> list[str]:
    names = set(schema.feature_names)
    out = [c for c in _COX_PREFERENCE if c in names][:_COX_DEFAULT_SIZE]
    return out or numeric_columns(schema, clinical_only=True)[:_COX_DEFAULT_SIZE]


def default_analysis(use_case: str, endpoint: str) -> dict:
    """The default analysis settings of a use case and endpoint (a complete dict)."""
    return validate_analysis(use_case, endpoint, None)


def validate_analysis(use_case: str, endpoint: str, settings: dict | None) -> dict:
    """Defaults + `settings` -> the complete validated settings dict; ValueError naming each bad
    field ("analysis.<field>: why", one per line)."""
    schema = _schema(use_case)
    try:
        schema.endpoint(str(endpoint))
    except KeyError as err:
        raise ValueError(f"analysis: endpoint: {err.args[0]}") from None
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"analysis: settings must be an object, got {type(settings).__name__}")
    try:
        raw = AnalysisSettings(**(settings or {}))
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            lines.append(f"analysis.{where}: {e['msg']}")
        raise ValueError("\n".join(lines)) from None
    errors: list[str] = []
    numeric_all = numeric_columns(schema)
    cat_all = categorical_columns(schema)
    features = set(schema.feature_names)

    analyses = list(dict.fromkeys(raw.analyses))
    bad = [a for a in analyses if a not in ANALYSES]
    if bad:
        errors.append(f"analysis.analyses: unknown analysis {bad}; known: {list(ANALYSES)}")
    if not analyses:
        errors.append("analysis.analyses: choose at least one of " + ", ".join(ANALYSES))
    analyses = [a for a in ANALYSES if a in analyses]

    if raw.group_by and raw.group_by != HOSPITAL and raw.group_by not in cat_all:
        why = ("is numeric; group by a categorical or binary column" if raw.group_by in features
               else "is not a column of the use case")
        errors.append(f"analysis.group_by: {raw.group_by!r} {why} (or \"hospital\")")

    numeric = numeric_columns(schema, clinical_only=True) if raw.numeric is None else list(dict.fromkeys(raw.numeric))
    bad = [c for c in numeric if c not in numeric_all]
    if bad:
        errors.append(f"analysis.numeric: {bad} are not numeric columns of {schema.use_case}")
    categorical = (categorical_columns(schema, clinical_only=True) if raw.categorical is None
                   else list(dict.fromkeys(raw.categorical)))
    bad = [c for c in categorical if c not in cat_all]
    if bad:
        errors.append(f"analysis.categorical: {bad} are not categorical or binary columns of {schema.use_case}")
    covariates = _default_covariates(schema) if raw.covariates is None else list(dict.fromkeys(raw.covariates))
    bad = [c for c in covariates if c not in features]
    if bad:
        errors.append(f"analysis.covariates: {bad} are not columns of {schema.use_case}")
    if "cox" in analyses and not covariates:
        errors.append("analysis.covariates: Cox needs at least one covariate")
    if len(covariates) > 30:
        errors.append(f"analysis.covariates: at most 30 covariates, got {len(covariates)}")
    if not math.isfinite(raw.cox_penalizer):
        errors.append("analysis.cox_penalizer: must be a finite number")
    if raw.at_risk_every_months < raw.time_step_months:
        errors.append(f"analysis.at_risk_every_months: {raw.at_risk_every_months:g} is finer than the time "
                      f"grid step ({raw.time_step_months:g} months)")
    if errors:
        raise ValueError("\n".join(errors))
    return {
        "analyses": analyses, "group_by": raw.group_by, "numeric": numeric, "categorical": categorical,
        "covariates": covariates, "cox_stratified": bool(raw.cox_stratified),
        "cox_penalizer": float(raw.cox_penalizer), "time_step_months": float(raw.time_step_months),
        "quantile_bins": int(raw.quantile_bins), "at_risk_every_months": float(raw.at_risk_every_months),
    }
