"""Experiment grids in the public API (the comparison page uses the same services): a study's
grids (list, start), one grid with its results, cancel, and the per-seed results as CSV.
Routes: portal/urls.py (`api/studies/<pk>/grid-runs/`, `api/grid-runs/<pk>/...`)."""
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.core.api import perms_required, refusal_response
from portal.experiments import services
from portal.experiments.models import GridRun
from portal.experiments.selectors import VIEW_PERM, grids_visible_to, source_label
from portal.studies.selectors import studies_visible_to


class GridStartSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=GridRun.Source.values, default="generated",
                                     help_text="generated (MDS cohort generator) or synthetic (a released "
                                               "synthetic cohort of this study)")
    synthetic_cohort = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, allow_null=True,
                                                help_text="Id of a released synthetic cohort of this study "
                                                          "(source synthetic only)")
    n = serializers.IntegerField(min_value=services.LIMITS["n"][0], max_value=services.LIMITS["n"][1],
                                 default=services.LIMITS["n"][2], help_text="Patients of the generated cohort")
    seed = serializers.IntegerField(min_value=services.LIMITS["seed"][0], max_value=services.LIMITS["seed"][1],
                                    default=services.LIMITS["seed"][2], help_text="Seed of the generated cohort")
    model = serializers.ChoiceField(choices=services.MODELS, required=False,
                                    help_text="Survival model; default: the study's")
    seeds = serializers.IntegerField(min_value=services.LIMITS["seeds"][0], max_value=services.LIMITS["seeds"][1],
                                     default=services.LIMITS["seeds"][2],
                                     help_text="Repeats, each with its own train/test split")
    rounds = serializers.IntegerField(min_value=services.LIMITS["rounds"][0], max_value=services.LIMITS["rounds"][1],
                                      default=services.LIMITS["rounds"][2],
                                      help_text="Rounds at most (best round chosen on the nodes' hold-outs)")
    federations = serializers.ListField(child=serializers.ChoiceField(choices=services.FEDERATIONS), min_length=1,
                                        max_length=2, default=list(services.FEDERATIONS),
                                        help_text="Federation sizes: 3 (60/30/10 %) and/or 5 (45/20/15/10/10 %)")
    cases = serializers.ListField(child=serializers.ChoiceField(choices=services.CASES), min_length=1, max_length=2,
                                  default=list(services.CASES))
    isolated = serializers.BooleanField(default=True, help_text="Also train each node alone")
    n_boot = serializers.IntegerField(min_value=services.LIMITS["n_boot"][0], max_value=services.LIMITS["n_boot"][1],
                                      default=services.LIMITS["n_boot"][2],
                                      help_text="Bootstrap samples of the 95 % intervals (global test set)")


class GridRunSerializer(serializers.ModelSerializer):
    source_label = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = GridRun
        fields = ["id", "study", "source", "source_label", "synthetic_cohort", "generated_n", "generated_seed",
                  "config", "status", "cancel_requested", "progress", "error", "created_by", "created_at",
                  "started_at", "finished_at"]
        read_only_fields = fields

    def get_source_label(self, grid) -> str:
        return source_label(grid)


class GridRunDetailSerializer(GridRunSerializer):
    class Meta(GridRunSerializer.Meta):
        fields = GridRunSerializer.Meta.fields + ["results"]
        read_only_fields = fields


def _refusal(exc: services.GridRefused) -> Response:
    if isinstance(exc, services.GridForbidden):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    return refusal_response(exc)


class StudyGridRunsView(APIView):
    """GET: a study's experiment grids. POST: start one on pooled generated or released synthetic
    data (coordinators)."""

    permission_classes = [perms_required(services.START_PERM, safe=(VIEW_PERM,))]

    def _study(self, request, pk):
        return get_object_or_404(studies_visible_to(request.user), pk=pk)

    @extend_schema(responses={200: GridRunSerializer(many=True)})
    def get(self, request, pk: int):
        study = self._study(request, pk)
        return Response(GridRunSerializer(grids_visible_to(request.user).filter(study=study), many=True).data)

    @extend_schema(request=GridStartSerializer, responses={201: GridRunSerializer, 400: dict, 403: dict, 409: dict})
    def post(self, request, pk: int):
        study = self._study(request, pk)
        ser = GridStartSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            grid = services.start_grid(request.user, study, **ser.validated_data)
        except services.GridRefused as exc:
            return _refusal(exc)
        return Response(GridRunSerializer(grid).data, status=status.HTTP_201_CREATED)


class GridRunView(APIView):
    """One grid with its results (summary, per-seed rows, per-round C, Kaplan-Meier curves)."""

    permission_classes = [perms_required(VIEW_PERM)]

    @extend_schema(responses={200: GridRunDetailSerializer})
    def get(self, request, pk: int):
        grid = get_object_or_404(grids_visible_to(request.user), pk=pk)
        return Response(GridRunDetailSerializer(grid).data)


class GridRunCancelView(APIView):
    """Cancel a grid: a queued one at once, a running one at the next setting boundary."""

    permission_classes = [perms_required(services.CANCEL_PERM)]

    @extend_schema(request=None, responses={200: GridRunSerializer, 409: dict})
    def post(self, request, pk: int):
        grid = get_object_or_404(grids_visible_to(request.user), pk=pk)
        try:
            grid = services.cancel_grid(request.user, grid)
        except services.GridRefused as exc:
            return _refusal(exc)
        return Response(GridRunSerializer(grid).data)


class GridResultsCsvView(APIView):
    """The per-seed results of a finished grid (one row per seed, setting, case, evaluation set)."""

    permission_classes = [perms_required(VIEW_PERM)]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR,
                              409: OpenApiResponse(description="the grid has not finished")})
    def get(self, request, pk: int):
        grid = get_object_or_404(grids_visible_to(request.user), pk=pk)
        if grid.status != GridRun.Status.FINISHED:
            return Response({"detail": f"grid {grid.pk} is {grid.status}; results exist once it has finished"},
                            status=status.HTTP_409_CONFLICT)
        response = HttpResponse(services.results_csv(grid), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="fedhaem-grid-{grid.pk}-results.csv"'
        return response
