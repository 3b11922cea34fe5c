from rest_framework import mixins, viewsets
from rest_framework.response import Response

from portal.core.api import perms_required
from portal.studies import services
from portal.studies.selectors import runs_visible_to, studies_visible_to
from portal.studies.serializers import RunSerializer, StudySerializer


class StudyViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Studies. Coordinators create and edit; other roles read."""

    serializer_class = StudySerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return studies_visible_to(self.request.user)

    def get_permissions(self):
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [perms_required("studies.view_study")()]
        return [perms_required("studies.add_study", "studies.change_study")()]

    def perform_create(self, serializer):
        serializer.instance = services.create_study(self.request.user, dict(serializer.validated_data))

    def perform_update(self, serializer):
        serializer.instance = services.update_study(self.request.user, serializer.instance,
                                                    dict(serializer.validated_data))


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs with their status and every metric so far."""

    serializer_class = RunSerializer
    permission_classes = [perms_required("studies.view_run")]

    def get_queryset(self):
        qs = runs_visible_to(self.request.user)
        study = self.request.query_params.get("study")
        if study and study.isdigit():
            qs = qs.filter(study_id=int(study))
        return qs
