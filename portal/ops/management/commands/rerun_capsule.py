"""`manage.py rerun_capsule CAPSULE.json`: run a model's reproducibility capsule again in this
process (the in-process executor: the same loop and node functions as a deployed run) on the demo
federation's datasets, or on the node registries under --data-root, and compare the final C-index
with the recorded one. Exit status 1 when they differ by more than --tolerance."""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portal.ops import federation_demo
from portal.studies import capsule


class Command(BaseCommand):
    help = "Re-run a reproducibility capsule on the demo federation and compare its C-index."

    def add_arguments(self, parser):
        parser.add_argument("capsule_file", metavar="CAPSULE", type=Path, help="the capsule file (from the model page or the API)")
        parser.add_argument("--data-root", type=Path, default=None,
                            help="folder with one <node>/data dataset registry per node "
                                 "(default: the demo federation's nodes, generated when absent)")
        parser.add_argument("--tolerance", type=float, default=1e-6,
                            help="largest accepted absolute difference of the C-index (default 1e-6)")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the comparison as JSON")

    def handle(self, *args, capsule_file: Path, data_root: Path | None, tolerance: float, as_json: bool, **opts):
        doc = _read(capsule_file)
        nodes = sorted({d["node"] for d in doc["datasets"]})
        if data_root is None:
            federation_demo.prepare_node_data(echo=lambda text: self.stderr.write(text))
            dirs = {n: federation_demo.node_dir(n) / "data" for n in nodes}
        else:
            dirs = {n: data_root / n / "data" for n in nodes}
        try:
            out = capsule.rerun(doc, capsule.load_tables(doc, dirs))
        except capsule.CapsuleError as exc:
            raise CommandError(f"{capsule_file}: {exc}") from exc
        out["tolerance"] = tolerance
        out["reproduced"] = out["difference"] <= tolerance
        if as_json:
            self.stdout.write(json.dumps(out, indent=2, sort_keys=True))
        else:
            self.stdout.write(f"run {doc['run'].get('id')} round {out['round']}: recorded C-index {out['recorded']!r}, "
                              f"re-run {out['rerun']!r}, difference {out['difference']:.3g} "
                              f"(tolerance {tolerance:g})")
            if not out["code_matches"]:
                self.stdout.write("note: this code differs from the run's (source sha256)")
            for name, (was, now) in sorted(out["packages_differ"].items()):
                self.stdout.write(f"note: {name} {was} at the run, {now or 'absent'} now")
        if not out["reproduced"]:
            raise CommandError(f"not reproduced: the C-index differs by {out['difference']:.3g} > {tolerance:g}")


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"{path}: cannot read the capsule ({exc})") from exc
    try:
        return capsule.validate(doc)
    except capsule.CapsuleError as exc:
        raise CommandError(f"{path}: {exc}") from exc
