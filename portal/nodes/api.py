import math

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from fl_engine.node import policy as node_policy
from portal.accounts.models import Organisation
from portal.core.api import perms_required
from portal.datasets import metadata
from portal.nodes import services
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import nodes_visible_to
from portal.studies.services import approvals_for_node, policies_for_node


# A heartbeat lists at most this many charges per dataset (the node sends its last 20).
REPORTED_CHARGES_MAX = 100

RESERVED_NODE_NAMES = frozenset({
    "global", "all", "any", "none", "null", "manager", "server", "superlink", "serverapp", "portal",
    "admin", "system", "central", "centralised", "centralized", "pooled", "federated", "local",
})


class WorkerNodeSerializer(serializers.ModelSerializer):
    organisation = serializers.SlugRelatedField(slug_field="code", queryset=Organisation.objects.all())
    online = serializers.BooleanField(read_only=True)

    class Meta:
        model = WorkerNode
        fields = ["id", "name", "organisation", "status", "online", "last_heartbeat",
                  "flower_node_id", "public_key", "approved_at", "created_at"]
        read_only_fields = ["status", "last_heartbeat", "flower_node_id", "approved_at", "created_at"]

    def validate_public_key(self, value: str) -> str:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_public_key, load_ssh_public_key

        raw = value.strip().encode()
        from cryptography.exceptions import UnsupportedAlgorithm

        try:
            key = load_pem_public_key(raw) if raw.startswith(b"-----") else load_ssh_public_key(raw)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise serializers.ValidationError(f"not a PEM or OpenSSH public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise serializers.ValidationError("SuperNode keys must be EC P-384 (secp384r1)")
        return value.strip()

    def validate_name(self, value: str) -> str:
        # Metrics, logs and the federation use these words for things that are not a hospital's
        # node ("global" = the federation's own metrics); a node so named would be confused with them.
        if value.strip().lower() in RESERVED_NODE_NAMES:
            raise serializers.ValidationError(f"{value!r} is reserved; choose another node name")
        return value

    def validate_organisation(self, org):
        user = self.context["request"].user
        if not user.has_perm("nodes.approve_workernode") and org != user.organisation:
            raise serializers.ValidationError("you can only register nodes of your own organisation")
        return org


class WorkerNodeViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Worker nodes. Node operators see and register their organisation's nodes; administrators
    approve and revoke."""

    queryset = WorkerNode.objects.none()  # typed path parameters in the schema; rows: get_queryset
    lookup_value_regex = r"\d+"
    serializer_class = WorkerNodeSerializer
    permission_classes = [perms_required("nodes.view_workernode")]

    def get_queryset(self):
        return nodes_visible_to(self.request.user)

    def get_permissions(self):
        if self.action in ("create", "replace_key"):
            return [perms_required("nodes.view_workernode")()]
        if self.action in {"approve", "revoke"}:
            return [perms_required("nodes.approve_workernode")()]
        return super().get_permissions()

    def create(self, request, *args, **kwargs):
        user = request.user
        if not (user.has_perm("nodes.add_workernode") or user.has_perm("studies.approve_study")):
            return Response({"detail": "Your role does not allow registering nodes."}, status=403)
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            node = services.register_node(user, ser.validated_data["organisation"], ser.validated_data["name"],
                                          ser.validated_data["public_key"])
        except services.KeyInUse as exc:
            return Response({"public_key": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(self.get_serializer(node).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=dict, responses={200: WorkerNodeSerializer})
    @action(detail=True, methods=["post"], url_path="replace-key")
    def replace_key(self, request, pk=None):
        """A new public key for a pending or revoked node of the caller's organisation."""
        node = self.get_object()
        user = request.user
        if not (user.has_perm("nodes.approve_workernode") or
                (user.has_perm("nodes.add_workernode") or user.has_perm("studies.approve_study"))
                and node.organisation_id == user.organisation_id):
            return Response({"detail": "you can only replace keys of your own organisation's nodes"}, status=403)
        ser = self.get_serializer(node, data={"public_key": request.data.get("public_key", ""),
                                              "name": node.name, "organisation": node.organisation.code})
        ser.is_valid(raise_exception=True)
        try:
            node = services.replace_key(user, node, ser.validated_data["public_key"])
        except services.KeyInUse as exc:
            return Response({"public_key": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        except services.NodeStateError as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(self.get_serializer(node).data)

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        node = get_object_or_404(WorkerNode, pk=pk)
        try:
            token = services.approve_node(request.user, node)
        except services.NodeStateError as exc:
            return Response({"detail": str(exc)}, status=409)
        node.refresh_from_db()
        return Response({**self.get_serializer(node).data, "token": token})

    @extend_schema(request=None, responses={200: WorkerNodeSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        node = get_object_or_404(WorkerNode, pk=pk)
        try:
            node = services.revoke_node(request.user, node, str(request.data.get("reason", "")))
        except services.NodeStateError as exc:
            return Response({"detail": str(exc)}, status=409)
        return Response(self.get_serializer(node).data)


class DatasetSummarySerializer(serializers.Serializer):
    """One dataset a heartbeat lists: the metadata fields of fl_engine.node.datasets, bounded
    (portal.datasets.metadata); anything else is refused, not dropped."""

    name = serializers.CharField(max_length=metadata.DATASET_NAME_MAX)
    version = serializers.IntegerField(required=False, min_value=1, max_value=metadata.VERSION_MAX)
    use_case = serializers.CharField(required=False, max_length=8)
    patient_count = serializers.IntegerField(required=False, min_value=0, max_value=metadata.PATIENTS_MAX)
    fingerprint = serializers.RegexField(metadata.FINGERPRINT_PATTERN, required=False)

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        if unknown:
            raise serializers.ValidationError({k: "unknown field; heartbeats carry dataset metadata only"
                                               for k in unknown[:20]})
        return super().to_internal_value(data)


class _Closed(serializers.Serializer):
    """Refuses fields it does not declare (a node report carries aggregates only, nothing else)."""

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        if unknown:
            raise serializers.ValidationError({str(k)[:60]: "unknown field; node reports carry ledger aggregates only"
                                               for k in unknown[:20]})
        return super().to_internal_value(data)


def _finite(value):
    if value is not None and not math.isfinite(value):
        raise serializers.ValidationError("must be a finite number")
    return value


class LedgerChargeSerializer(_Closed):
    """One line of a node's privacy ledger as its heartbeat reports it (fl_engine.node.budget.spend_report)."""

    run = serializers.CharField(max_length=40, allow_blank=True)
    study = serializers.CharField(max_length=40, allow_blank=True, required=False, default="")
    epsilon = serializers.FloatField(allow_null=True, min_value=0, max_value=1e6, validators=[_finite])
    delta = serializers.FloatField(allow_null=True, min_value=0, max_value=1, validators=[_finite])
    time = serializers.DateTimeField()
    dp = serializers.BooleanField()

    def validate(self, attrs):
        if attrs["dp"] and attrs["epsilon"] is None:
            raise serializers.ValidationError({"epsilon": "a DP charge states its epsilon"})
        if not attrs["dp"] and attrs["epsilon"] is not None:
            raise serializers.ValidationError({"epsilon": "a charge without DP guarantee has epsilon null"})
        attrs["time"] = attrs["time"].isoformat()
        return attrs


class DatasetSpendSerializer(_Closed):
    """A dataset's ledger summary at the node: budget, spent, charges (aggregates only)."""

    dataset = serializers.CharField(max_length=metadata.DATASET_NAME_MAX)
    budget_epsilon = serializers.FloatField(min_value=0, max_value=1e6, validators=[_finite])
    budget_delta = serializers.FloatField(min_value=0, max_value=1, validators=[_finite])
    budget_source = serializers.ChoiceField(choices=["operator", "node config", "default"])
    spent_epsilon = serializers.FloatField(min_value=0, max_value=1e9, validators=[_finite])
    spent_delta = serializers.FloatField(min_value=0, max_value=1e6, validators=[_finite])
    dp_runs = serializers.IntegerField(min_value=0, max_value=10**7)
    runs = serializers.IntegerField(min_value=0, max_value=10**7)
    charges = LedgerChargeSerializer(many=True, max_length=REPORTED_CHARGES_MAX)


class PrivacyReportSerializer(_Closed):
    datasets = DatasetSpendSerializer(many=True, max_length=1000)


def validate_policy_limits(value) -> dict:
    """A node's announced policy-file: {"*" or dataset name: partial policy}, each entry on the
    policy schema (fl_engine.node.policy.validate_policy); the error names the entry and field."""
    if not isinstance(value, dict):
        raise serializers.ValidationError("must be an object {\"*\" or dataset name: partial policy}")
    if len(value) > 1000:
        raise serializers.ValidationError("at most 1000 entries")
    out, problems = {}, {}
    for key, part in value.items():
        if not isinstance(key, str) or not key or len(key) > metadata.DATASET_NAME_MAX:
            problems[str(key)[:60]] = f"a dataset name of 1 to {metadata.DATASET_NAME_MAX} characters, or \"*\""
            continue
        try:
            out[key] = node_policy.validate_policy(part, partial=True)
        except node_policy.PolicyError as err:
            problems[key] = {f: r for f, r in err.problems}
    if problems:
        raise serializers.ValidationError(problems)
    return out


class HeartbeatSerializer(serializers.Serializer):
    name = serializers.CharField(required=False)
    flower_node_id = serializers.RegexField(r"^\d{1,20}$", required=False, allow_blank=True)
    status = serializers.CharField(required=False, max_length=40)
    datasets = DatasetSummarySerializer(many=True, required=False, max_length=1000)
    privacy = PrivacyReportSerializer(required=False)
    policy_limits = serializers.JSONField(required=False)

    def validate_policy_limits(self, value):
        return validate_policy_limits(value)


class HeartbeatView(APIView):
    """A worker node reports it is alive (node token only)."""

    permission_classes = [perms_required("nodes.report_heartbeat")]

    @extend_schema(request=HeartbeatSerializer, responses={200: dict})
    def post(self, request):
        node = getattr(request.user, "worker_node", None)
        if node is None or node.status != WorkerNode.Status.APPROVED:
            return Response({"detail": "this token belongs to no approved worker node"}, status=403)
        ser = HeartbeatSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        node = services.heartbeat(node, ser.validated_data)
        return Response({"node": node.name, "status": node.status, "received_at": node.last_heartbeat})


def _approved_node(request):
    node = getattr(request.user, "worker_node", None)
    if node is None or node.status != WorkerNode.Status.APPROVED:
        return None
    return node


class NodeApprovalsView(APIView):
    """A worker node fetches its datasets' approvals (node token only) to check each incoming run
    itself before it touches data (fl_engine.node.approvals)."""

    permission_classes = [perms_required("nodes.report_heartbeat")]

    @extend_schema(request=None, responses={200: dict})
    def get(self, request):
        node = _approved_node(request)
        if node is None:
            return Response({"detail": "this token belongs to no approved worker node"}, status=403)
        return Response({"node": node.name, "approvals": approvals_for_node(node),
                         "policies": policies_for_node(node)})


class RefusalSerializer(serializers.Serializer):
    study = serializers.CharField(max_length=20, allow_blank=True)
    run = serializers.CharField(max_length=20, allow_blank=True)
    dataset = serializers.CharField(max_length=100, allow_blank=True)
    reason = serializers.CharField(max_length=2000)


class NodeRefusalView(APIView):
    """A worker node reports that it refused a run (not approved, settings changed, wrong
    dataset); the refusal is audited against the node."""

    permission_classes = [perms_required("nodes.report_heartbeat")]

    @extend_schema(request=RefusalSerializer, responses={201: dict})
    def post(self, request):
        node = _approved_node(request)
        if node is None:
            return Response({"detail": "this token belongs to no approved worker node"}, status=403)
        ser = RefusalSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        services.record_refusal(node, ser.validated_data)
        return Response({"recorded": True}, status=status.HTTP_201_CREATED)
