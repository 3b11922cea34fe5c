"""Template helpers of the analysis pages: numbers with suppressed cells, the study page's
"Run analysis" button and the analysis section of the study report."""
from __future__ import annotations

from django import template

from fedhaem_kernel.schema import SCHEMAS
from fl_engine.analytics.settings import HOSPITAL, categorical_columns, default_analysis, numeric_columns
from portal.analyses.selectors import latest_report
from portal.analyses.views import section_context

register = template.Library()


@register.filter
def num(value, digits=2):
    """A number with `digits` decimals; "—" when missing (null)."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.{int(digits)}f}"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def pvalue(value):
    if value is None:
        return "—"
    v = float(value)
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


@register.filter
def cell(value, threshold):
    """A count, or "<threshold" for a suppressed (null) small cell."""
    return f"<{threshold}" if value is None else str(value)


@register.inclusion_tag("analyses/_study_button.html", takes_context=True)
def analysis_start_button(context, study):
    """The study page's "Run analysis" (coordinators, when the study has analysis settings)."""
    user = context["request"].user
    return {"study": study, "show": bool(study.analysis) and user.has_perm("studies.add_run"),
            "settings": study.analysis, "csrf_token": context.get("csrf_token")}


@register.inclusion_tag("analyses/_study_report_section.html", takes_context=True)
def analysis_report_section(context, study):
    """The newest finished analysis of `study` in the study report (nothing when none)."""
    found = latest_report(context["request"].user, study)
    if found is None:
        return {"found": False}
    run, rep = found
    return {"found": True, "run": run, **section_context(rep), "prefix": "report-", "in_study_report": True,
            "plots_id": "report-analysis-plots", "inline_js": context.get("inline_js")}


@register.simple_tag
def analysis_columns() -> dict:
    """Per use case, the columns the study form's Analysis section may name (the engine's own
    lists: fl_engine.analytics.settings) and its defaults, for static/js/analysis_form.js."""
    out = {}
    for use_case, schema in SCHEMAS.items():
        try:
            default = default_analysis(use_case, schema.endpoints[0].name)
        except (ValueError, IndexError):
            continue
        out[use_case] = {"numeric": numeric_columns(schema), "categorical": categorical_columns(schema),
                         "group_by": [HOSPITAL] + categorical_columns(schema),
                         "default_covariates": default["covariates"]}
    return out
