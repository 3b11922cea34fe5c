"""Create or refresh the development provider's people and the portal's OIDC client."""
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand

from portal.devidp.people import PEOPLE


class Command(BaseCommand):
    help = "Seed the development identity provider (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", required=True)
        parser.add_argument("--client-secret-file", required=True)
        parser.add_argument("--redirect-uri", action="append", required=True,
                            help="Portal callback URL(s), e.g. http://127.0.0.1:8000/oidc/callback/")
        parser.add_argument("--password-file", required=True, help="File holding the people's password")
        parser.add_argument("--post-logout-uri", action="append", default=[])

    def handle(self, *args, **opts):
        from oauth2_provider.models import get_application_model

        password = open(opts["password_file"]).read().strip()
        for username, given, family, roles, org in PEOPLE:
            user, _ = User.objects.get_or_create(username=username)
            user.first_name, user.last_name = given, family
            user.email = f"{username}@{org}.example.org"
            user.set_password(password)
            user.save()
            groups = [Group.objects.get_or_create(name=f"role:{r}")[0] for r in roles]
            groups.append(Group.objects.get_or_create(name=f"org:{org}")[0])
            user.groups.set(groups)
        Application = get_application_model()
        secret = open(opts["client_secret_file"]).read().strip()
        app, _ = Application.objects.get_or_create(client_id=opts["client_id"])
        app.name = "FedHaem portal"
        app.client_type = Application.CLIENT_CONFIDENTIAL
        app.authorization_grant_type = Application.GRANT_AUTHORIZATION_CODE
        app.client_secret = secret
        app.hash_client_secret = True
        app.redirect_uris = " ".join(opts["redirect_uri"])
        app.post_logout_redirect_uris = " ".join(opts["post_logout_uri"])
        app.algorithm = Application.RS256_ALGORITHM
        app.skip_authorization = True
        app.save()
        self.stdout.write(f"development identity provider ready on port {settings.PORT}: "
                          f"{len(PEOPLE)} people, client {app.client_id}")
