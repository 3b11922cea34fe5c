from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal.accounts.models import Organisation, User


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "country")
    search_fields = ("code", "name")


@admin.register(User)
class FedHaemUserAdmin(UserAdmin):
    fieldsets = UserAdmin.fieldsets + (("FedHaem", {"fields": ("organisation", "timezone", "is_service_account")}),)
    list_display = ("username", "email", "organisation", "is_service_account", "is_active")
    list_filter = ("organisation", "groups", "is_service_account")
