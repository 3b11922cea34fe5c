from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts import services
from portal.accounts.models import Organisation
from portal.accounts.roles import ROLE_LABELS, user_roles
from portal.core.api import perms_required


class OrganisationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organisation
        fields = ["id", "code", "name", "country"]


class OrganisationViewSet(viewsets.ModelViewSet):
    """Hospitals and institutes of the network. Administrators add and edit them."""

    queryset = Organisation.objects.all()
    serializer_class = OrganisationSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_permissions(self):
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [perms_required("accounts.view_organisation")()]
        return [perms_required("accounts.add_organisation", "accounts.change_organisation")()]


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    organisation = serializers.CharField(allow_null=True)
    roles = serializers.ListField(child=serializers.CharField())
    role_labels = serializers.ListField(child=serializers.CharField())
    timezone = serializers.CharField()


class MeUpdateSerializer(serializers.Serializer):
    timezone = serializers.CharField(max_length=64, help_text="IANA time zone, e.g. Europe/Madrid, or UTC.")

    def validate_timezone(self, value):
        if value not in services.TIME_ZONES:
            raise serializers.ValidationError(
                f"{value!r} is not an IANA time zone name such as Europe/Madrid or UTC")
        return value


class MeView(APIView):
    """Who am I: username, organisation, roles and time zone. PATCH {"timezone"} changes one's own
    time zone (what the preferences page does)."""

    serializer_class = MeSerializer

    def _me(self, user):
        roles = user_roles(user)
        return MeSerializer({
            "username": user.username,
            "organisation": user.organisation.code if user.organisation else None,
            "roles": roles, "role_labels": [ROLE_LABELS[r] for r in roles],
            "timezone": user.timezone,
        }).data

    def get(self, request):
        return Response(self._me(request.user))

    @extend_schema(request=MeUpdateSerializer, responses={200: MeSerializer})
    def patch(self, request):
        ser = MeUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        services.set_timezone(request.user, ser.validated_data["timezone"])
        return Response(self._me(request.user))
