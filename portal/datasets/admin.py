from django.contrib import admin

from portal.datasets.models import Dataset


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "node", "use_case", "patient_count", "registered_at")
    list_filter = ("use_case", "node")
    readonly_fields = [f.name for f in Dataset._meta.fields]
