from django.contrib import admin

from portal.analyses.models import AnalysisReport


@admin.register(AnalysisReport)
class AnalysisReportAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "created_at")
    readonly_fields = ("run", "content", "created_at")
