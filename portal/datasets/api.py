from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.core.api import exception_handler, perms_required
from portal.core.choices import UseCase
from portal.datasets import metadata, services
from portal.datasets.models import Dataset
from fl_engine.node import policy as node_policy
from portal.datasets.selectors import can_register, datasets_visible_to
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import local_limits_for


class DatasetSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name", read_only=True)
    organisation = serializers.CharField(source="node.organisation.code", read_only=True)
    registered = serializers.SerializerMethodField()
    catalogued_by = serializers.CharField(source="catalogued_by.username", read_only=True, default=None)

    class Meta:
        model = Dataset
        fields = ["id", "node", "organisation", "name", "version", "use_case", "cdm_version",
                  "patient_count", "feature_schema", "quality_report", "fingerprint", "registered_at",
                  "registered", "title", "clinical_description", "inclusion_start", "inclusion_end", "contact",
                  "policy", "catalogued_at", "catalogued_by"]

    def get_registered(self, ds) -> bool:
        """In the catalogue: a clinician of its hospital registered it (`registered_at` is the announcement)."""
        return ds.catalogued_at is not None


@extend_schema_field({"type": "object", "description": "The dataset's use policy (fl_engine.node.policy): "
                     "sensitivity, consent_scope, purposes, require_dp, min_cell_count, expires_on."})
class PolicyField(serializers.JSONField):
    def to_internal_value(self, data):
        try:
            policy = node_policy.validate_policy(super().to_internal_value(data))
        except node_policy.PolicyError as exc:
            raise serializers.ValidationError({f: [r] for f, r in exc.problems}) from None
        if not policy["purposes"]:
            raise serializers.ValidationError({"purposes": ["allow at least one purpose"]})
        return policy


class RegistrationSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    clinical_description = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    inclusion_start = serializers.DateField(required=False, allow_null=True, default=None)
    inclusion_end = serializers.DateField(required=False, allow_null=True, default=None)
    contact = serializers.CharField(max_length=200)
    policy = PolicyField()

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        if unknown:
            raise serializers.ValidationError({k[:80]: "unknown field" for k in unknown[:20]})
        return super().to_internal_value(data)

    def validate(self, attrs):
        if attrs.get("inclusion_start") and attrs.get("inclusion_end") and attrs["inclusion_start"] > attrs["inclusion_end"]:
            raise serializers.ValidationError({"inclusion_end": "before the inclusion start"})
        return attrs


class DatasetViewSet(viewsets.ReadOnlyModelViewSet):
    """The catalogue: every node's datasets (metadata and quality summaries only)."""

    queryset = Dataset.objects.none()  # typed path parameters in the schema; real rows: get_queryset
    lookup_value_regex = r"\d+"
    serializer_class = DatasetSerializer
    permission_classes = [perms_required("datasets.view_dataset")]

    def get_queryset(self):
        qs = datasets_visible_to(self.request.user)
        use_case = self.request.query_params.get("use_case")
        if use_case:
            qs = qs.filter(use_case=use_case.upper())
        registered = self.request.query_params.get("registered")
        if registered in ("true", "false"):
            qs = qs.filter(catalogued_at__isnull=registered == "false")
        return qs

    @extend_schema(request=RegistrationSerializer, responses={200: DatasetSerializer})
    @action(detail=True, methods=["post"], url_path="registration")
    def registration(self, request, pk=None):
        """Register an announced dataset (it enters the catalogue) or change its registration:
        a clinician of the hospital holding it; audited with the policy before and after."""
        ds = self.get_object()
        if not can_register(request.user, ds):
            raise PermissionDenied("only a clinician of the hospital holding this dataset may register it")
        ser = RegistrationSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        policy = data.pop("policy")
        try:
            ds = services.register(request.user, ds, data, policy)
        except services.RegistrationRefused as exc:
            return Response({"detail": str(exc)}, status=400)
        return Response(DatasetSerializer(ds).data)

    @extend_schema(responses={200: {"type": "object"}})
    @action(detail=True, methods=["get"], url_path="node-limits")
    def node_limits(self, request, pk=None):
        """The node's own limits for this dataset (the operator's policy file, as the node
        announced it) and the policy the node applies: the stricter of both."""
        ds = self.get_object()
        limits = local_limits_for(ds.node, ds.name) or {}
        return Response({"limits": limits, "registered_policy": ds.policy,
                         "effective": node_policy.effective_policy(ds.policy or None, limits)})


@extend_schema_field({"type": "object", "description": "Counts, fractions and per-column completeness and "
                     "ranges (portal.datasets.metadata.QualitySummary); never rows."})
class QualitySummaryField(serializers.JSONField):
    def to_internal_value(self, data):
        try:
            return metadata.validate_quality_summary(super().to_internal_value(data))
        except metadata.MetadataRefused as exc:
            raise serializers.ValidationError([f"{path}: {reason}" for path, reason in exc.problems]) from None


class AnnounceSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=metadata.DATASET_NAME_MAX)
    version = serializers.IntegerField(min_value=1, max_value=metadata.VERSION_MAX)
    use_case = serializers.ChoiceField(choices=UseCase.choices)
    schema_version = serializers.CharField(max_length=16)
    patient_count = serializers.IntegerField(min_value=0, max_value=metadata.PATIENTS_MAX)
    fingerprint = serializers.RegexField(metadata.FINGERPRINT_PATTERN)
    quality_summary = QualitySummaryField(required=False)
    feature_schema = serializers.ListField(child=serializers.CharField(max_length=metadata.COLUMN_NAME_MAX),
                                           max_length=metadata.FEATURES_MAX, required=False)

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        if unknown:
            # Metadata only: anything else (rows above all) is refused, not silently dropped.
            raise serializers.ValidationError({k[:80]: "unknown field; announcements carry metadata only"
                                               for k in unknown[:20]})
        if isinstance(data, dict) and isinstance(data.get("use_case"), str):
            data = {**data, "use_case": data["use_case"].upper()}
        return super().to_internal_value(data)


class AnnounceView(APIView):
    """A worker node announces a dataset version (node token only; metadata, never rows)."""

    permission_classes = [perms_required("datasets.announce_dataset")]

    @extend_schema(request=AnnounceSerializer, responses={201: DatasetSerializer, 200: DatasetSerializer})
    def post(self, request):
        node = getattr(request.user, "worker_node", None)
        if node is None or node.status != WorkerNode.Status.APPROVED:
            return Response({"detail": "this token belongs to no approved worker node"}, status=403)
        ser = AnnounceSerializer(data=request.data)
        if not ser.is_valid():
            # Audited before answering: a node sending rows (or anything off the schema) is news.
            services.refuse_metadata(node, request.user, ser.errors, request.data,
                                     scalar_fields={"name", "version", "use_case", "schema_version",
                                                    "patient_count", "fingerprint"})
            return exception_handler(serializers.ValidationError(ser.errors), {"view": self, "request": request})
        try:
            ds, created = services.announce(node, request.user, ser.validated_data)
        except services.DatasetConflict as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(DatasetSerializer(ds).data, status=201 if created else 200)
