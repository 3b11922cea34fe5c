"""The boundary of an analysis run's result: analysis.json (version 1), validated before it is
stored. The layout is the one agreed with the engine (fl_engine.federation.analysis writes it):
aggregates only, a suppressed small cell is null, values JSON-safe (no NaN)."""
from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

Num = float | None
Count = int | None


class ReportRefused(ValueError):
    """analysis.json is missing or malformed; the message names the file, the field and the reason."""


class _M(BaseModel):
    model_config = ConfigDict(extra="allow")


class Histogram(_M):
    edges: list[float]
    counts: list[Count]

    @model_validator(mode="after")
    def _bins(self):
        if self.edges and len(self.counts) != len(self.edges) - 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.edges)} edges (one fewer count than edges)")
        return self


class NumericStat(_M):
    n: Count = None
    missing: Count = None
    mean: Num = None
    sd: Num = None
    q25: Num = None
    median: Num = None
    q75: Num = None
    quantile_error: Num = None
    histogram: Histogram | None = None


class CategoricalStat(_M):
    missing: Count = None
    counts: dict[str, Count] = {}


class Summary(_M):
    n: Count = None
    numeric: dict[str, NumericStat | None] = {}
    categorical: dict[str, CategoricalStat | None] = {}


class Describe(_M):
    pooled: Summary | None = None
    by_hospital: dict[str, Summary | None] = {}
    by_group: dict[str, Summary | None] = {}


class KmGroup(_M):
    time: list[float]
    survival: list[Num]
    lower: list[Num]
    upper: list[Num]
    at_risk: list[Count]
    events: list[Count]
    median: Num = None
    median_ci: list[Num] = [None, None]

    @model_validator(mode="after")
    def _same_length(self):
        n = len(self.time)
        bad = [k for k in ("survival", "lower", "upper", "at_risk", "events") if len(getattr(self, k)) != n]
        if bad:
            raise ValueError(f"{', '.join(bad)} must have as many values as time ({n})")
        if len(self.median_ci) != 2:
            raise ValueError("median_ci must be [lower, upper]")
        return self


class AtRiskTable(_M):
    times: list[float]
    groups: dict[str, list[Count]]

    @model_validator(mode="after")
    def _same_length(self):
        bad = [g for g, v in self.groups.items() if len(v) != len(self.times)]
        if bad:
            raise ValueError(f"group(s) {', '.join(bad)} must have one count per time ({len(self.times)})")
        return self


class Km(_M):
    groups: dict[str, KmGroup]
    at_risk_table: AtRiskTable


class LogRank(_M):
    statistic: Num
    df: float | None = None
    p: Num
    groups: list[str] = []


class Cox(_M):
    covariates: list[str]
    coef: list[Num]
    se: list[Num]
    hr: list[Num]
    hr_lower: list[Num]
    hr_upper: list[Num]
    p: list[Num]
    stratified: bool = False
    n: Count = None
    events: Count = None
    iterations: Count = None
    loglik: Num = None

    @model_validator(mode="after")
    def _same_length(self):
        n = len(self.covariates)
        bad = [k for k in ("coef", "se", "hr", "hr_lower", "hr_upper", "p") if len(getattr(self, k)) != n]
        if bad:
            raise ValueError(f"{', '.join(bad)} must have one value per covariate ({n})")
        return self


class AnalysisResult(_M):
    version: Literal[1]
    use_case: str
    endpoint: str
    time_unit: str = "months"
    min_cell_count: int
    hospitals: list[str]
    settings: dict = {}
    describe: Describe | None = None
    km: Km | None = None
    logrank: LogRank | None = None
    logrank_stratified: LogRank | None = None
    cox: Cox | None = None
    notes: list[str] = []


def parse_report(data: bytes | str | dict, source: str = "analysis.json") -> dict:
    """The analysis result in `data` (file bytes, text or a parsed dict) validated; the dict to
    store. Raises ReportRefused naming `source`, the field path and the reason."""
    if not isinstance(data, dict):
        try:
            text = data.decode() if isinstance(data, bytes) else data
            data = json.loads(text)  # NaN / Infinity parse; _reject_non_finite names where
        except (UnicodeDecodeError, ValueError) as exc:
            raise ReportRefused(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReportRefused(f"{source}: an object is required at the top level, got {type(data).__name__}")
    _reject_non_finite(data, source, "")
    try:
        AnalysisResult.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()[:10])
        more = f" (and {exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
        raise ReportRefused(f"{source} is malformed: {problems}{more}") from None
    return data


def _reject_non_finite(value, source: str, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ReportRefused(f"{source}: {path or '(top level)'} is {value} (not finite; missing values must be null)")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_non_finite(v, source, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_non_finite(v, source, f"{path}[{i}]")
