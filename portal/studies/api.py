from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.core.api import id_query_param, perms_required, refusal_response
from portal.datasets.models import Dataset
from portal.studies import capsule, lifecycle, registry, services
from portal.studies.models import ModelVersion, Run, Study, StudyApproval
from portal.studies.config import ROUNDS
from portal.studies.selectors import models_visible_to, runs_visible_to, studies_visible_to
from portal.studies.serializers import RunSerializer, StudySerializer


class StartRunSerializer(serializers.Serializer):
    rounds = serializers.IntegerField(min_value=ROUNDS.lo, max_value=ROUNDS.hi, required=False)
    comparison = serializers.BooleanField(required=False, default=True,
                                          help_text="run the comparison phase after the last round")


class ApprovalSerializer(serializers.ModelSerializer):
    dataset = serializers.PrimaryKeyRelatedField(queryset=Dataset.objects.all())
    decided_by = serializers.CharField(source="decided_by.username", read_only=True)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=500)  # as the page's form
    stale = serializers.SerializerMethodField(help_text="approved for settings the study no longer has")

    class Meta:
        model = StudyApproval
        fields = ["dataset", "decision", "comment", "decided_by", "decided_at", "settings_hash", "stale"]
        read_only_fields = ["decided_by", "decided_at", "settings_hash"]

    def get_stale(self, obj) -> bool:
        current = self.context.get("settings_hash")
        return bool(current and obj.decision == "approved" and obj.settings_hash != current)


class StudyViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Studies. Coordinators create, edit and run them; node operators approve them on their
    datasets; other roles read."""

    queryset = Study.objects.none()  # typed path parameters in the schema; rows: get_queryset
    lookup_value_regex = r"\d+"
    serializer_class = StudySerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return studies_visible_to(self.request.user)

    def get_permissions(self):
        if self.action == "runs":
            return [perms_required("studies.add_run", safe=("studies.view_run",))()]
        if self.action == "approvals":
            return [perms_required("studies.approve_study", safe=("studies.view_study",))()]
        if self.action == "clone":
            return [perms_required("studies.add_study")()]
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [perms_required("studies.view_study")()]
        return [perms_required("studies.add_study", "studies.change_study")()]

    def perform_create(self, serializer):
        serializer.instance = services.create_study(self.request.user, dict(serializer.validated_data))

    def perform_update(self, serializer):
        serializer.instance = services.update_study(self.request.user, serializer.instance,
                                                    dict(serializer.validated_data))

    @extend_schema(request=StartRunSerializer, responses={201: RunSerializer, 200: RunSerializer(many=True)})
    @action(detail=True, methods=["get", "post"])
    def runs(self, request, pk=None):
        """GET: the study's runs. POST {"rounds": n, "comparison": true}: start a run (coordinators)."""
        study = self.get_object()
        if request.method == "GET":
            runs = runs_visible_to(request.user).filter(study=study)
            return Response(RunSerializer(runs, many=True).data)
        ser = StartRunSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            run = services.start_run(request.user, study, ser.validated_data.get("rounds"),
                                     comparison=ser.validated_data["comparison"])
        except services.RunRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ApprovalSerializer, responses={200: ApprovalSerializer(many=True)})
    @action(detail=True, methods=["get", "post"])
    def approvals(self, request, pk=None):
        """GET: decisions so far. POST {"dataset", "decision": approved|rejected, "comment"}:
        a node operator's decision on one of their datasets."""
        study = self.get_object()
        if request.method == "POST":
            ser = ApprovalSerializer(data=request.data)
            ser.is_valid(raise_exception=True)
            try:
                services.decide_approval(request.user, study, ser.validated_data["dataset"],
                                         ser.validated_data["decision"], ser.validated_data.get("comment", ""))
            except services.RunRefused as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        return Response(ApprovalSerializer(study.approvals.select_related("decided_by"), many=True,
                                           context={"settings_hash": services.settings_hash(study)}).data)


    @extend_schema(request=None, responses={201: StudySerializer})
    @action(detail=True, methods=["post"])
    def clone(self, request, pk=None):
        """A new draft study with this study's settings, datasets and privacy options (coordinators)."""
        study = services.clone_study(request.user, self.get_object())
        return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)


class RegisteredModelSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="run.study_id", read_only=True)
    study_title = serializers.CharField(source="run.study.title", read_only=True)
    aliases = serializers.SerializerMethodField(help_text="aliases this version holds (one version per alias)")

    class Meta:
        model = ModelVersion
        fields = ["id", "run", "study", "study_title", "registered_model_name", "version", "mlflow_run_id",
                  "artifact_uri", "metrics", "aliases", "tags", "lineage", "created_at"]

    def get_aliases(self, obj) -> list[str]:
        return registry.aliases_of(obj)


class AliasSerializer(serializers.Serializer):
    alias = serializers.CharField(max_length=40, help_text="e.g. candidate, champion")
    reason = serializers.CharField(max_length=registry.REASON_MAX, help_text="kept in the audit trail")
    remove = serializers.BooleanField(required=False, default=False,
                                      help_text="take the alias off this version instead of moving it here")


class TagSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=64)
    value = serializers.CharField(max_length=registry.TAG_VALUE_MAX, allow_blank=True,
                                  help_text='"" removes the tag')
    reason = serializers.CharField(max_length=registry.REASON_MAX, help_text="kept in the audit trail")


def _refused(exc: registry.LifecycleRefused) -> Response:
    if exc.field:
        return refusal_response(exc)  # 400 naming the field, as serializer errors
    return Response({"detail": str(exc)}, status=exc.status)


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """The model registry: global models of finished runs, their aliases and tags (coordinators
    set them with a reason, audited), their files (audited download) and reproducibility capsule."""

    queryset = ModelVersion.objects.none()  # typed path parameters in the schema; rows: get_queryset
    lookup_value_regex = r"\d+"
    serializer_class = RegisteredModelSerializer

    def get_permissions(self):
        if self.action in ("alias", "tags"):
            return [perms_required("studies.change_modelversion")()]
        return [perms_required("studies.view_modelversion")()]

    def get_queryset(self):
        return models_visible_to(self.request.user).order_by("registered_model_name", "-created_at")

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY,
                              404: OpenApiResponse(description="not visible, or files not stored here")})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The model's files (model.npz weights + model.json preprocessing and metadata) as a zip
        named after the version and its aliases; recorded in the audit trail as `model.download`."""
        archive = registry.archive(request.user, self.get_object())
        if archive is None:
            return Response({"detail": "the model's files are not stored on this portal (see MLflow)"},
                            status=status.HTTP_404_NOT_FOUND)
        filename, content = archive
        response = HttpResponse(content, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @extend_schema(request=AliasSerializer, responses={200: RegisteredModelSerializer,
                                                       409: OpenApiResponse(description="not in MLflow's registry")})
    @action(detail=True, methods=["post"])
    def alias(self, request, pk=None):
        """POST {"alias", "reason"}: move the alias to this version (from whichever version held it);
        {"alias", "reason", "remove": true}: take it off this version. Coordinators; audited."""
        mv = self.get_object()
        ser = AliasSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        v = ser.validated_data
        try:
            if v["remove"]:
                registry.remove_alias(request.user, mv, v["alias"], v["reason"])
            else:
                registry.move_alias(request.user, mv, v["alias"], v["reason"])
        except registry.LifecycleRefused as exc:
            return _refused(exc)
        mv.refresh_from_db()
        return Response(RegisteredModelSerializer(mv).data)

    @extend_schema(request=TagSerializer, responses={200: RegisteredModelSerializer,
                                                     409: OpenApiResponse(description="not in MLflow's registry")})
    @action(detail=True, methods=["post"])
    def tags(self, request, pk=None):
        """POST {"key", "value", "reason"}: set a tag of this version ("" removes it). Coordinators; audited."""
        mv = self.get_object()
        ser = TagSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        v = ser.validated_data
        try:
            mv = registry.set_tag(request.user, mv, v["key"], v["value"], v["reason"])
        except registry.LifecycleRefused as exc:
            return _refused(exc)
        return Response(RegisteredModelSerializer(mv).data)

    @extend_schema(responses={(200, "application/json"): OpenApiTypes.OBJECT,
                              409: OpenApiResponse(description="the run has no result to reproduce")})
    @action(detail=True, methods=["get"])
    def capsule(self, request, pk=None):
        """The reproducibility capsule of this model's run (contract, code hash, dataset
        fingerprints, seeds, package versions, recorded C-index) as one JSON file; audited as
        `model.capsule`. Re-run it with `manage.py rerun_capsule FILE`."""
        mv = self.get_object()
        try:
            filename, text = capsule.download(request.user, mv)
        except capsule.CapsuleError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        response = HttpResponse(text, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs with their status and every metric so far."""

    queryset = Run.objects.none()  # typed path parameters in the schema; rows: get_queryset
    lookup_value_regex = r"\d+"
    serializer_class = RunSerializer
    permission_classes = [perms_required("studies.view_run")]

    def get_queryset(self):
        qs = runs_visible_to(self.request.user)
        study = id_query_param(self.request, "study")
        if study is not None:
            qs = qs.filter(study_id=study)
        return qs

    def get_permissions(self):
        if self.action == "cancel":
            return [perms_required("studies.cancel_run")()]
        return super().get_permissions()

    @extend_schema(request=None, responses={200: RunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        try:
            run = services.cancel_run(request.user, run)
        except services.RunRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(RunSerializer(run).data)


class RunEventsView(APIView):
    """The ServerApp posts each numbered run event here with the run's own token (an HMAC of
    the run id under the run-events key). Idempotent: the same event twice stores nothing new."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(request=dict, responses={201: dict, 200: dict})
    def post(self, request, pk: int):
        run = get_object_or_404(Run, pk=pk)
        header = request.headers.get("Authorization", "")
        token = header[6:] if header.startswith("Token ") else ""
        if not services.verify_run_token(run, token):
            return Response({"detail": "a valid run token is required"}, status=status.HTTP_401_UNAUTHORIZED)
        try:
            new = lifecycle.ingest_event(run.pk, request.data)
        except lifecycle.EventRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"stored": bool(new)}, status=status.HTTP_201_CREATED if new else status.HTTP_200_OK)
