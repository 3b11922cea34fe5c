from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from portal.accounts.models import Organisation, User


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "country")
    search_fields = ("code", "name")


# Roles (groups), organisation and superuser / staff status come from the identity provider's
# claims at every sign-in (portal.accounts.oidc); nobody grants them here, a superuser included.
# The username is the provider's preferred_username: renaming accounts here would hand one
# person's portal account (its history, its API token) to another at their next sign-in.
CLAIM_FIELDS = ("is_superuser", "is_staff", "groups", "user_permissions", "organisation", "username")


@admin.register(User)
class FedHaemUserAdmin(UserAdmin):
    fieldsets = UserAdmin.fieldsets + (("FedHaem", {"fields": ("organisation", "timezone", "is_service_account")}),)
    list_display = ("username", "email", "organisation", "is_service_account", "is_active")
    list_filter = ("organisation", "groups", "is_service_account")
    readonly_fields = CLAIM_FIELDS + ("is_service_account", "last_login", "date_joined")

    def get_readonly_fields(self, request, obj=None):
        # The add form asks only for a username (and no password: sign-in is OIDC only).
        return () if obj is None else self.readonly_fields


admin.site.unregister(Group)


@admin.register(Group)
class ReadOnlyGroupAdmin(GroupAdmin):
    """Role groups and their permissions are defined in code (portal.accounts.roles)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
