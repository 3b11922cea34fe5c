"""Rotate the key-encryption keys of encryption at rest: re-wrap every file's data key under the
current KEK (a header rewrite per file, no bulk re-encryption); safe to interrupt and re-run."""
import json

from django.core.management.base import BaseCommand, CommandError

from fedhaem_kernel.atrest import KeyringError
from portal.core import at_rest


class Command(BaseCommand):
    help = ("Re-wrap every file encrypted at rest (media, run folders, MLflow artifacts) under the current "
            "key-encryption key; --new-key first adds a fresh KEK to the key file and makes it current.")

    def add_arguments(self, parser):
        parser.add_argument("--new-key", action="store_true",
                            help="add a new KEK to the key file and make it current (refused when the keys "
                                 "come from FEDHAEM_AT_REST_KEYS: change the environment instead)")
        parser.add_argument("--retire", metavar="KEY_ID",
                            help="after re-wrapping, remove this old KEK from the key file (refused while "
                                 "any file is still under it)")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **opts):
        def progress(path, outcome):
            if opts["verbosity"] > 1:
                self.stderr.write(f"{outcome}: {path}")

        try:
            out = at_rest.rotate_keys(new_key=opts["new_key"], retire=opts["retire"], progress=progress)
        except KeyringError as exc:
            raise CommandError(str(exc)) from None
        if opts["json"]:
            self.stdout.write(json.dumps(out, indent=1))
            return
        if "new_key" in out:
            self.stdout.write(f"new key-encryption key {out['new_key']} is current "
                              f"(was {out['previous_key']})")
        self.stdout.write(f"re-wrapped {out['changed']} file(s), {out['unchanged']} already under "
                          f"{out['current_key']}, {out['plaintext']} plaintext (see encrypt_at_rest --migrate), "
                          f"{len(out['errors'])} error(s)")
        for err in out["errors"]:
            self.stderr.write(f"  {err}")
        self.stdout.write("files per key: " + ", ".join(f"{k}: {n}" for k, n in sorted(out["key_ids"].items())))
        if out.get("retired"):
            self.stdout.write(f"retired key {out['retired']}")
        if out["errors"]:
            raise CommandError(f"{len(out['errors'])} file(s) could not be re-wrapped; re-run after fixing them")
