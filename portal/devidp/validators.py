from oauth2_provider.oauth2_validators import OAuth2Validator


def _tagged(user, prefix: str) -> list[str]:
    return [g.name[len(prefix):] for g in user.groups.all() if g.name.startswith(prefix)]


class DevClaimsValidator(OAuth2Validator):
    """Adds the claims the portal maps: preferred_username, roles, organisation."""

    oidc_claim_scope = None  # release every claim below whatever the scopes

    def get_additional_claims(self, request):
        user = request.user
        orgs = _tagged(user, "org:")
        return {
            "preferred_username": user.username,
            "email": user.email,
            "given_name": user.first_name,
            "family_name": user.last_name,
            "roles": _tagged(user, "role:"),
            "organisation": orgs[0] if orgs else "",
        }
