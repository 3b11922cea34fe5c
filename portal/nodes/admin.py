from django.contrib import admin

from portal.nodes.models import WorkerNode


@admin.register(WorkerNode)
class WorkerNodeAdmin(admin.ModelAdmin):
    list_display = ("name", "organisation", "status", "last_heartbeat", "flower_node_id")
    list_filter = ("status", "organisation")
    search_fields = ("name",)
    readonly_fields = ("last_heartbeat", "last_report", "flower_node_id", "approved_at", "approved_by",
                       "service_user")
