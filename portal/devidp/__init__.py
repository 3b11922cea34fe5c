"""Development identity provider: a real OpenID Connect provider (django-oauth-toolkit with OIDC
enabled) for the demo and the tests, run as its own process on its own port. Production uses
Keycloak (docker/keycloak/). Never expose this provider beyond loopback."""
