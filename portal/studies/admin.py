from django.contrib import admin

from portal.studies.models import ModelVersion, RoundMetric, Run, Study, StudyApproval


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("title", "use_case", "model_kind", "rounds", "status", "owner", "created_at")
    list_filter = ("use_case", "model_kind", "status")
    search_fields = ("title",)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "status", "created_at", "finished_at", "flower_run_id")
    list_filter = ("status",)
    readonly_fields = ("flower_run_id", "task_id", "error", "config")


admin.site.register(StudyApproval)
admin.site.register(RoundMetric)
admin.site.register(ModelVersion)
