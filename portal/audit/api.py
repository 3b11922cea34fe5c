import csv
import json

from django.http import HttpResponse
from rest_framework import serializers, viewsets
from rest_framework.decorators import action

from portal.audit.models import AuditEvent
from portal.core.api import perms_required
from fedhaem_kernel.csvcells import safe_row


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["id", "at", "actor_name", "action", "object_type", "object_id", "object_repr", "detail"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail (administrators). Filters: actor, action, object_type, since, until."""

    serializer_class = AuditEventSerializer
    lookup_value_regex = r"\d+"
    permission_classes = [perms_required("audit.view_auditevent")]

    def get_queryset(self):
        qs = AuditEvent.objects.all()
        p = self.request.query_params
        if p.get("actor"):
            qs = qs.filter(actor_name=p["actor"])
        if p.get("action"):
            qs = qs.filter(action__startswith=p["action"])
        if p.get("object_type"):
            qs = qs.filter(object_type=p["object_type"])
        if p.get("since"):
            qs = qs.filter(at__gte=p["since"])
        if p.get("until"):
            qs = qs.filter(at__lte=p["until"])
        return qs

    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request):
        """The filtered trail as CSV."""
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="fedhaem-audit.csv"'
        writer = csv.writer(response)
        writer.writerow(["at_utc", "actor", "action", "object_type", "object_id", "object", "detail"])
        for e in self.get_queryset().iterator():
            writer.writerow(safe_row([e.at.isoformat(), e.actor_name, e.action, e.object_type, e.object_id,
                                      e.object_repr, json.dumps(e.detail, ensure_ascii=False)]))
        return response
