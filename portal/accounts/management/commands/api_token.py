"""Print (creating if needed) the API token of a user, for scripts: Authorization: Token <key>."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print the API token of USERNAME (created on first use)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true", help="Replace the existing token")

    def handle(self, *args, username, rotate=False, **opts):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}: users appear after their first sign-in "
                               "(or seed the demo with `manage.py seed_demo`)") from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
