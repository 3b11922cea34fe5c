"""The migrate path of encryption at rest: encrypt in place the plaintext files an older
install left in media (synthetic cohorts) and the run folders. Without --migrate: count only."""
import json

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from portal.core import at_rest


class Command(BaseCommand):
    help = ("Count files at rest by key (plaintext included); --migrate encrypts the plaintext ones in "
            "media and the run folders in place (atomic per file, safe to re-run).")

    def add_arguments(self, parser):
        parser.add_argument("--migrate", action="store_true", help="encrypt plaintext files in place")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **opts):
        def progress(path, outcome):
            if opts["verbosity"] > 1:
                self.stderr.write(f"{outcome}: {path}")

        try:
            out = at_rest.migrate_plaintext(apply=opts["migrate"], progress=progress)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if opts["json"]:
            self.stdout.write(json.dumps(out, indent=1))
            return
        if opts["migrate"]:
            self.stdout.write(f"encrypted {out['changed']} plaintext file(s), {out['unchanged']} already "
                              f"encrypted, {len(out['errors'])} error(s)")
            for err in out["errors"]:
                self.stderr.write(f"  {err}")
        self.stdout.write("files per key under " + ", ".join(out["roots"]) + ": "
                          + (", ".join(f"{k}: {n}" for k, n in sorted(out["census"].items())) or "none"))
        if out["mlflow_census"].get("plaintext"):
            self.stdout.write(f"MLflow artifact store: {out['mlflow_census']['plaintext']} plaintext file(s) of "
                              "experiments created before encryption was on (left as they are: MLflow reads them "
                              "by their file: location)")
        if out.get("errors"):
            raise CommandError(f"{len(out['errors'])} file(s) could not be encrypted")
