from django.contrib import admin

from portal.synthesis.models import SyntheticCohort


@admin.register(SyntheticCohort)
class SyntheticCohortAdmin(admin.ModelAdmin):
    list_display = ("id", "generator", "run", "row_count", "released", "created_at")
    list_filter = ("generator", "released")
