"""Seed the demo: hospitals, and the people of the development identity provider (so that
`manage.py api_token coordinator` works before anyone signed in). Idempotent."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from portal.accounts.models import Organisation
from portal.accounts.roles import ensure_role_groups, set_user_roles
from portal.devidp.people import PEOPLE

HOSPITALS = [
    ("hosp-a", "Hospital A (demo)", "ES"),
    ("hosp-b", "Hospital B (demo)", "IT"),
    ("hosp-c", "Hospital C (demo)", "DE"),
    ("hosp-z", "Hospital Z (demo, outside the study)", "FR"),
]


class Command(BaseCommand):
    help = "Seed demo organisations and people (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--federation", action="store_true", default=False)

    def handle(self, *args, **opts):
        ensure_role_groups()
        orgs = {}
        for code, name, country in HOSPITALS:
            orgs[code], _ = Organisation.objects.update_or_create(code=code, defaults={"name": name, "country": country})
        User = get_user_model()
        for username, given, family, roles, org in PEOPLE:
            user, _ = User.objects.get_or_create(username=username)
            user.first_name, user.last_name = given, family
            user.email = f"{username}@{org}.example.org"
            user.organisation = orgs[org]
            user.is_staff = "administrator" in roles
            user.set_unusable_password()
            user.save()
            set_user_roles(user, roles)
        self.stdout.write(f"seeded {len(HOSPITALS)} hospitals and {len(PEOPLE)} people")
