"""Synthetic cohorts in the public API (the cohorts pages use the same services): list, detail
with validation report and data card, release (coordinators), download (data managers,
released cohorts only). Register with `router.register("cohorts", SyntheticCohortViewSet,
basename="cohort")`."""
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from portal.core.api import perms_required
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

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY, 403: dict})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        cohort = self.get_object()
        try:
            handle = services.open_for_download(request.user, cohort)
        except services.CohortRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        return FileResponse(handle, as_attachment=True, filename=cohort.file.name.rsplit("/", 1)[-1])
