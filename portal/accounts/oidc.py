"""OIDC login: usernames from `preferred_username`, roles and organisation from claims."""
from __future__ import annotations

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.shortcuts import resolve_url
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from portal.accounts.models import Organisation
from portal.accounts.roles import ROLES, set_user_roles
from portal.audit.services import record

log = logging.getLogger(__name__)


def _claim_list(claims: dict, name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return [str(v) for v in value]


class FedHaemOIDCBackend(OIDCAuthenticationBackend):
    """Maps identity-provider claims onto portal users at every login."""

    def get_userinfo(self, access_token, id_token, payload):
        # Role claims may sit in the ID token only (Keycloak mappers choose); merge both.
        info = super().get_userinfo(access_token, id_token, payload)
        merged = dict(payload or {})
        merged.update(info or {})
        return merged

    def verify_claims(self, claims):
        return bool(claims.get("preferred_username"))

    def filter_users_by_claims(self, claims):
        username = claims.get("preferred_username")
        if not username:
            return self.UserModel.objects.none()
        return self.UserModel.objects.filter(username=username, is_service_account=False)

    def create_user(self, claims):
        user = self.UserModel.objects.create_user(claims["preferred_username"], email=claims.get("email", ""))
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        user.email = claims.get("email", user.email) or ""
        user.first_name = claims.get("given_name", user.first_name) or ""
        user.last_name = claims.get("family_name", user.last_name) or ""
        # Organisation, roles, staff and superuser status come from the claims alone, at every
        # sign-in: whatever was granted in the portal itself is taken away again here.
        org_code = claims.get(settings.OIDC_ORGANISATION_CLAIM)
        if org_code:
            user.organisation, _ = Organisation.objects.get_or_create(
                code=str(org_code), defaults={"name": str(org_code)})
        else:
            user.organisation = None
        claimed = _claim_list(claims, settings.OIDC_ROLES_CLAIM)
        roles = [r for r in claimed if r in ROLES]
        superuser_role = getattr(settings, "OIDC_SUPERUSER_ROLE", "")
        user.is_superuser = bool(superuser_role) and superuser_role in claimed
        user.is_staff = "administrator" in roles or user.is_superuser
        user.save()
        set_user_roles(user, roles)
        user.groups.remove(*user.groups.exclude(name__in=roles))
        user.user_permissions.clear()
        record(user, "login", user, {"roles": roles, "superuser": user.is_superuser,
                                     "organisation": user.organisation.code if user.organisation else None})
        return user


def provider_logout_url(request) -> str:
    """Where sign-out sends the browser (mozilla-django-oidc's OIDC_OP_LOGOUT_URL_METHOD, called
    before the portal session ends): the provider's end-session endpoint (OpenID Connect
    RP-Initiated Logout), so the identity-provider session ends too and the next sign-in asks
    for the password again. `post_logout_redirect_uri` is under PORTAL_BASE_URL, the address
    registered with the provider."""
    back = settings.PORTAL_BASE_URL + resolve_url(settings.LOGOUT_REDIRECT_URL)
    if not settings.OIDC_OP_LOGOUT_ENDPOINT:
        return back
    params = {"client_id": settings.OIDC_RP_CLIENT_ID, "post_logout_redirect_uri": back}
    id_token = request.session.get("oidc_id_token")
    if id_token:
        params["id_token_hint"] = id_token
    sep = "&" if "?" in settings.OIDC_OP_LOGOUT_ENDPOINT else "?"
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}{sep}{urlencode(params)}"
