"""Analysis runs in the public API: start (coordinators), the report as JSON and its tables as
CSV (whoever may see the run: the survival runs' rules, hospital scoping included)."""
from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.analyses import selectors, services
from portal.audit.services import record
from portal.core.api import perms_required, refusal_response
from portal.studies.selectors import studies_visible_to


class AnalysisRunOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    study = serializers.IntegerField(source="study_id")
    analysis = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    error = serializers.CharField()
    has_report = serializers.SerializerMethodField()
    page = serializers.SerializerMethodField()

    def get_analysis(self, run) -> dict:
        return run.config.get("analysis") or {}

    def get_has_report(self, run) -> bool:
        return hasattr(run, "analysis_report")

    def get_page(self, run) -> str:
        from django.urls import reverse
        return reverse("page-analysis-run", args=[run.pk])


class AnalysisRunsView(APIView):
    """GET: a study's analysis runs. POST (no body): start an analysis run with the study's
    analysis settings (coordinators; every hospital must have approved the study)."""

    permission_classes = [perms_required(services.START_PERM, safe=("studies.view_run",))]

    def _study(self, request, pk):
        return get_object_or_404(studies_visible_to(request.user), pk=pk)

    @extend_schema(responses={200: AnalysisRunOut(many=True)})
    def get(self, request, pk: int):
        study = self._study(request, pk)
        runs = selectors.analysis_runs_visible_to(request.user).filter(study=study)
        return Response(AnalysisRunOut(runs, many=True).data)

    @extend_schema(request=None, responses={201: AnalysisRunOut, 400: dict, 409: dict})
    def post(self, request, pk: int):
        study = self._study(request, pk)
        try:
            run = services.start_analysis_run(request.user, study)
        except services.AnalysisRefused as exc:
            return refusal_response(exc)
        return Response(AnalysisRunOut(run).data, status=status.HTTP_201_CREATED)


def _run(request, pk):
    return get_object_or_404(selectors.analysis_runs_visible_to(request.user), pk=pk)


class AnalysisReportView(APIView):
    """GET: the analysis.json of a finished analysis run (aggregates only); 404 while it has none."""

    permission_classes = [perms_required("studies.view_run")]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: dict})
    def get(self, request, pk: int):
        run = _run(request, pk)
        rep = selectors.report_of(run)
        if rep is None:
            return Response({"detail": f"analysis run {run.pk} has no report yet (it is {run.status})"},
                            status=status.HTTP_404_NOT_FOUND)
        return Response({"run": run.pk, "study": run.study_id, "status": run.status, "report": rep})


class AnalysisCsvView(APIView):
    """GET: one table of the report as CSV: describe (per hospital, pooled and per group), km
    (survival, band, at risk and events per group and time), at_risk (the number-at-risk table
    under the plot) or cox (coefficients and HRs)."""

    permission_classes = [perms_required("studies.view_run")]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY, 404: dict})
    def get(self, request, pk: int, table: str):
        run = _run(request, pk)
        return csv_response(request.user, run, table) or Response(
            {"detail": f"analysis run {run.pk} has no {table} table (no report yet, or the analysis was not run)"},
            status=status.HTTP_404_NOT_FOUND)


def csv_response(user, run, table: str) -> HttpResponse | None:
    """The CSV download of `table` (audited), or None when the run has no such table."""
    rep = selectors.report_of(run)
    if rep is None or table not in selectors.TABLES or not rep.get("km" if table == "at_risk" else table):
        return None
    resp = HttpResponse(selectors.table_csv(rep, table), content_type="text/csv; charset=utf-8")
    resp["Content-Disposition"] = f'attachment; filename="fedhaem-analysis-run-{run.pk}-{table}.csv"'
    record(user, "analysis.download", run, {"table": table})
    return resp
