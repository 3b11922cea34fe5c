from rest_framework import serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

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


class MeView(APIView):
    """Who am I: username, organisation and roles."""

    serializer_class = MeSerializer

    def get(self, request):
        roles = user_roles(request.user)
        return Response(MeSerializer({
            "username": request.user.username,
            "organisation": request.user.organisation.code if request.user.organisation else None,
            "roles": roles, "role_labels": [ROLE_LABELS[r] for r in roles],
            "timezone": request.user.timezone,
        }).data)
