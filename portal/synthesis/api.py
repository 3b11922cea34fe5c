"""Synthetic cohorts in the public API (the cohorts pages use the same services): list, detail
with validation report and data card, release (coordinators), download (data managers,
released cohorts only). Register with `router.register("cohorts", SyntheticCohortViewSet,
basename="cohort")`."""
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.core.api import perms_required, refusal_response
from portal.studies.selectors import runs_visible_to, studies_visible_to
from portal.synthesis import services
from portal.synthesis.models import SyntheticCohort
from portal.synthesis.selectors import cohorts_visible_to


class SyntheticCohortSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="run.study_id", read_only=True)
    gate_passed = serializers.SerializerMethodField()

    class Meta:
        model = SyntheticCohort
        fields = ["id", "run", "study", "generator", "row_count", "validation_report", "data_card",
                  "released", "released_at", "created_at", "gate_passed"]
        read_only_fields = fields

    def get_gate_passed(self, cohort) -> bool:
        return services.gate_passed(cohort)


class SyntheticCohortViewSet(viewsets.ReadOnlyModelViewSet):
    """Synthetic cohorts with their SAFE validation report and release status."""

    queryset = SyntheticCohort.objects.none()  # typed path parameters in the schema; rows: get_queryset
    lookup_value_regex = r"\d+"
    serializer_class = SyntheticCohortSerializer

    def get_queryset(self):
        return cohorts_visible_to(self.request.user)

    def get_permissions(self):
        if self.action == "release":
            return [perms_required("synthesis.add_syntheticcohort")()]
        return [perms_required("synthesis.view_syntheticcohort")()]

    @extend_schema(request=None, responses={200: SyntheticCohortSerializer, 409: dict})
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        try:
            cohort = services.release_cohort(request.user, self.get_object())
        except services.CohortRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(cohort).data)

    @extend_schema(responses={(200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY, 403: dict})
    @action(detail=True, methods=["get"], url_path="download-parquet")
    def download_parquet(self, request, pk=None):
        """The released cohort as Parquet, its data card in the file metadata (fedhaem.data_card)."""
        cohort = self.get_object()
        try:
            data = services.download_parquet(request.user, cohort)
        except services.CohortRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        return _parquet_response(cohort, data)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY, 403: dict})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        cohort = self.get_object()
        try:
            handle = services.open_for_download(request.user, cohort)
        except services.CohortRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        return FileResponse(handle, as_attachment=True, filename=cohort.file.name.rsplit("/", 1)[-1])


def _parquet_response(cohort, data: bytes) -> HttpResponse:
    name = (cohort.file.name.rsplit("/", 1)[-1] or f"cohort-{cohort.pk}.csv").rsplit(".", 1)[0] + ".parquet"
    resp = HttpResponse(data, content_type="application/vnd.apache.parquet")
    resp["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp


class GenerationRunSerializer(serializers.Serializer):
    generator = serializers.ChoiceField(choices=services.GENERATORS)
    rounds = serializers.IntegerField(min_value=services.ROUNDS.lo, max_value=services.ROUNDS.hi, default=5,
                                      help_text="Federated rounds (the Bayesian network and sd_sharing run one)")
    local_epochs = serializers.IntegerField(min_value=services.LOCAL_EPOCHS.lo, max_value=services.LOCAL_EPOCHS.hi,
                                            default=20,
                                            help_text="Local epochs per round on each node")
    rows = serializers.IntegerField(min_value=services.ROWS.lo, max_value=services.ROWS.hi, default=0,
                                    help_text="Rows of the final cohort; 0 = as many as training patients")
    generator_params = serializers.DictField(required=False, default=dict,
                                             help_text="Generator hyper-parameters (constructor keywords); "
                                                       "sd_sharing: {\"kind\": base generator, ...its keywords}")
    features = serializers.ListField(child=serializers.CharField(max_length=80), required=False, max_length=500,
                                     help_text="Generated columns; default: the use case's core columns")


class GenerationRunOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    rounds = serializers.IntegerField()
    config = serializers.JSONField()
    created_at = serializers.DateTimeField()
    error = serializers.CharField()
    rounds_completed = serializers.SerializerMethodField()
    cohort = serializers.SerializerMethodField()
    page = serializers.SerializerMethodField()

    def get_rounds_completed(self, run) -> int:
        return max((m.round for m in run.metrics.all() if m.node == "global" and m.name == "csf"), default=0)

    def get_cohort(self, run) -> int | None:
        c = run.synthetic_cohorts.first()
        return c.pk if c else None

    def get_page(self, run) -> str:
        from django.urls import reverse
        return reverse("page-generation-run", args=[run.pk])


class GenerationRunsView(APIView):
    """GET: a study's generation runs. POST {generator, rounds, local_epochs, rows,
    generator_params, features}: start a federated synthetic-cohort generation (coordinators)."""

    permission_classes = [perms_required(*services.START_PERMS, safe=("studies.view_run",))]

    def _study(self, request, pk):
        return get_object_or_404(studies_visible_to(request.user), pk=pk)

    @extend_schema(responses={200: GenerationRunOut(many=True)})
    def get(self, request, pk: int):
        study = self._study(request, pk)
        runs = runs_visible_to(request.user).filter(study=study, kind="synthesis")
        return Response(GenerationRunOut(runs, many=True).data)

    @extend_schema(request=GenerationRunSerializer, responses={201: GenerationRunOut, 400: dict, 409: dict})
    def post(self, request, pk: int):
        study = self._study(request, pk)
        ser = GenerationRunSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            run = services.start_generation_run(request.user, study, **ser.validated_data)
        except services.GenerationRefused as exc:
            return refusal_response(exc)
        return Response(GenerationRunOut(run).data, status=status.HTTP_201_CREATED)
