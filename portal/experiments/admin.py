from django.contrib import admin

from portal.experiments.models import GridRun


@admin.register(GridRun)
class GridRunAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "source", "status", "created_by", "created_at")
    list_filter = ("status", "source")
    readonly_fields = ("results",)
