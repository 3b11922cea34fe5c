"""Node-operator commands: ``etl``, ``report``, ``register`` (offline at the hospital).

    fedhaem-node etl --use-case mds --source <files or folder> --out DIR [--mapping FILE]
                     [--max-rejected FRACTION]
    fedhaem-node map-check --use-case aml --source export.csv [--mapping FILE]
                           [--write-mapping NEW.yaml] [--json]
    fedhaem-node report DIR [--html]
    fedhaem-node register --name NAME --dataset DIR [--data-dir D]
                          [--manager URL --token-file F [--ca-file CA]]
    fedhaem-node register --name NAME --announce-only [--version V] --manager URL --token-file F

``fl_engine/node/cli.py`` adds these to the ``fedhaem-node`` console script through
``add_subcommands``; ``python -m etl.cli ...`` runs them standalone. Encryption at rest: ``etl``,
``report`` and ``register`` take ``--keys-file`` (a keyring, fedhaem_kernel.atrest); without it the
standalone commands write plaintext. ``fedhaem-node`` passes its own keyring resolver (the node's
key file, created at first use, or FEDHAEM_NODE_AT_REST_KEYS[_FILE]), so on a node the outputs
holding patient rows are encrypted by default (docs/encryption-at-rest.md). Exit codes: 0 success,
1 announcement failed (local registration kept) or map-check found what would stop the ETL,
2 input or registration error (nothing written).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import webbrowser
from pathlib import Path

from fedhaem_kernel import atrest
from fedhaem_kernel.atrest import AtRestError, KeyProvider, KeyringError, LocalKeyring

from .announce import AnnounceError, announce
from .errors import EtlError
from .quality import render_text
from .registry import DatasetRegistry, RegistryError

DEFAULT_DATA_DIR_ENV = "FEDHAEM_NODE_DATA_DIR"


def data_dir_of(args) -> Path:
    return Path(getattr(args, "data_dir", None) or os.environ.get(DEFAULT_DATA_DIR_ENV) or "node-data")


def keys_from_flag(args) -> KeyProvider | None:
    """The keyring of ``--keys-file`` (None without it: plaintext)."""
    return LocalKeyring.from_file(args.keys_file) if getattr(args, "keys_file", None) else None


def _keys(args) -> tuple[KeyProvider | None, bool]:
    """(the keyring the command reads with, whether what it writes is encrypted)."""
    keys = args.keyring(args)
    return keys, keys is not None and getattr(args, "encrypt", True)


def cmd_etl(args) -> int:
    from .pipeline import run_etl  # FHIR models load in seconds: only for this command, not for --help

    try:
        keys, encrypt = _keys(args)
    except KeyringError as e:
        print(f"error: {e}", file=sys.stderr)
        print("nothing was written.", file=sys.stderr)
        return 2
    try:
        res = run_etl(args.use_case, args.source, args.out, mapping=args.mapping, layout=args.layout,
                      max_rejected_fraction=args.max_rejected, keys=keys if encrypt else None)
    except EtlError as e:
        print(f"error: {e}", file=sys.stderr)
        print("nothing was written.", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, folder removed mid-run...: the outputs move in only at the end
        print(f"error: {e.filename or args.out}: cannot write the outputs: {e.strerror or e}", file=sys.stderr)
        print("no complete output was written.", file=sys.stderr)
        return 2
    print(render_text(res.report))
    n = len(res.table)
    n_rej = res.report["summary"]["rejected_patients"]
    print(f"\nrejected {n_rej} of {n + n_rej} patients ({n_rej / max(n + n_rej, 1):.1%}; the run fails "
          f"above {args.max_rejected:.0%}); {res.report['summary'].get('quarantined_values', 0)} values "
          f"set missing, patients kept (quarantine.csv)")
    print(f"\nwrote {res.out_dir}/: bundles.ndjson, table.parquet, table.csv, quality.json, "
          f"quality.html, quarantine.csv, manifest.json ({n} patients, {res.seconds:.1f} s, "
          f"{n / max(res.seconds, 1e-9):.0f} rows/s)")
    print(f"fingerprint {res.manifest['fingerprint']}")
    if encrypt:
        print(f"encrypted at rest under key {keys.current_key_id} (all but manifest.json); "
              "fedhaem-node report decrypts them")
    else:
        print("not encrypted at rest (no keyring given: --keys-file)")
    print("next: fedhaem-node report", res.out_dir, " then  fedhaem-node register --name NAME "
          f"--dataset {res.out_dir}")
    return 0


def cmd_map_check(args) -> int:
    from .mapcheck import map_check, render, suggest_mapping  # FHIR models: only for this command, not for --help

    try:
        result = map_check(args.use_case, args.source, args.mapping)
    except EtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, default=str) if args.json else render(result))
    if args.write_mapping:
        target = Path(args.write_mapping)
        if target.exists() and not args.force:
            print(f"error: {target} exists; not overwritten (--force to replace it)", file=sys.stderr)
            return 2
        try:
            target.write_text(suggest_mapping(result, args.mapping), encoding="utf-8")
        except OSError as e:
            print(f"error: {target}: cannot write the mapping: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"\nwrote a starting mapping to {target}: review it (TODO lines), then "
              f"fedhaem-node map-check --use-case {args.use_case} --source ... --mapping {target}",
              file=sys.stderr if args.json else sys.stdout)
    return 1 if result["refusals"] else 0


def cmd_report(args) -> int:
    d = Path(args.dir)
    q = d / "quality.json" if d.is_dir() else d
    if not q.exists():
        print(f"error: {q} not found; run `fedhaem-node etl` first", file=sys.stderr)
        return 2
    try:
        keys, _ = _keys(args)
        report = json.loads(atrest.read_file(q, keys).decode("utf-8"))
    except (AtRestError, KeyringError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report["summary"], indent=1))
    else:
        print(render_text(report))
    html = q.with_suffix(".html")
    if args.html or args.open:
        if html.exists() and atrest.is_encrypted(html):
            # a browser cannot read the encrypted file: a plaintext copy in a private temporary folder
            try:
                plain = atrest.read_file(html, keys)
            except AtRestError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            folder = Path(tempfile.mkdtemp(prefix="fedhaem-report-"))
            html = folder / "quality.html"
            fd = os.open(html, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(plain)
            print(f"# {q.with_suffix('.html')} is encrypted at rest; a decrypted copy (it lists patient ids "
                  f"of rejected rows) is at {html}: delete {folder} when done", file=sys.stderr)
        print(f"HTML report: {html}")
        if html.exists() and args.open:
            webbrowser.open(html.as_uri())
    return 0


def _token(args) -> str:
    t = Path(args.token_file).read_text(encoding="utf-8").strip()
    if not t:
        raise ValueError(f"{args.token_file} is empty")
    return t


def _retry_hint(args, name, version) -> str:
    parts = ["fedhaem-node register --announce-only", f"--name {name}", f"--version {version}",
             f"--manager {args.manager}", f"--token-file {args.token_file}"]
    if args.data_dir:
        parts.append(f"--data-dir {args.data_dir}")
    if args.ca_file:
        parts.append(f"--ca-file {args.ca_file}")
    return " ".join(parts)


def cmd_register(args) -> int:
    try:
        keys, encrypt = _keys(args)
    except KeyringError as e:
        print(f"error: {e}", file=sys.stderr)
        print("nothing was registered.", file=sys.stderr)
        return 2
    reg = DatasetRegistry(data_dir_of(args), keys=keys, encrypt=encrypt)
    if bool(args.manager) != bool(args.token_file):
        print("error: --manager and --token-file go together", file=sys.stderr)
        return 2
    if args.announce_only:
        if not args.manager:
            print("error: --announce-only needs --manager and --token-file", file=sys.stderr)
            return 2
        try:
            entry = reg.get(args.name, args.version)
        except KeyError as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            return 2
    else:
        if not args.dataset:
            print("error: --dataset DIR (an ETL output folder) is required", file=sys.stderr)
            return 2
        try:
            entry, created = reg.register_etl_output(args.name, args.dataset)
        except (RegistryError, AtRestError, OSError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            print("nothing was registered.", file=sys.stderr)
            return 2
        state = "registered" if created else "unchanged (same fingerprint), already registered as"
        print(f"{state} {entry.name} v{entry.version}: {entry.use_case}, {entry.patient_count} patients, "
              f"fingerprint {entry.fingerprint[:16]}... in {reg.path}")
    if not args.manager:
        print("not announced (no --manager given); announce later with: fedhaem-node register "
              f"--announce-only --name {entry.name} --version {entry.version} --manager URL --token-file F")
        return 0
    try:
        token = _token(args)
        announce(args.manager, token, entry.announcement(), ca_file=args.ca_file)
    except (AnnounceError, OSError, ValueError) as e:
        print(f"ANNOUNCING FAILED: {e}", file=sys.stderr)
        print(f"the local registration of {entry.name} v{entry.version} stands. Retry with:\n  "
              f"{_retry_hint(args, entry.name, entry.version)}", file=sys.stderr)
        return 1
    reg.mark_announced(entry.name, entry.version)
    print(f"announced {entry.name} v{entry.version} to {args.manager}")
    return 0


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (0.05 = 5%)")
    return v


def add_subcommands(subparsers, keyring=keys_from_flag) -> None:
    """Register ``etl``, ``map-check``, ``report`` and ``register`` on an argparse subparsers object.
    ``keyring(args)`` gives the KeyProvider of encryption at rest (None: plaintext) for ``etl``,
    ``report`` and ``register``; the default reads ``--keys-file``."""
    p = subparsers.add_parser("etl", help="convert local files to FHIR, the ML-ready table and a quality report")
    p.add_argument("--use-case", required=True, type=str.upper, choices=["MDS", "AML", "CMML", "MM", "SCD"])
    p.add_argument("--source", required=True, nargs="+", help="files or folders (IWG-PM folder, CSV, FHIR ndjson)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mapping", help="hospital column-mapping file (YAML or JSON)")
    p.add_argument("--layout", default="auto", choices=["auto", "iwgpm", "csv", "fhir"])
    p.add_argument("--max-rejected", type=_fraction, default=0.05, metavar="FRACTION",
                   help="fail (exit 2, nothing written) when more than this fraction of patients "
                        "is rejected (default 0.05)")
    _keys_option(p, keyring)
    p.set_defaults(func=cmd_etl)

    p = subparsers.add_parser("map-check", help="dry run: how each field and source column would be read")
    p.add_argument("--use-case", required=True, type=str.upper, choices=["MDS", "AML", "CMML", "MM", "SCD"])
    p.add_argument("--source", required=True, nargs="+", help="CSV/TSV export file(s) or folder")
    p.add_argument("--mapping", help="hospital mapping file to check with the export (YAML or JSON)")
    p.add_argument("--write-mapping", metavar="FILE", help="write a suggested starting mapping here")
    p.add_argument("--force", action="store_true", help="with --write-mapping: replace an existing file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_map_check)

    p = subparsers.add_parser("report", help="show the quality report of an ETL output folder")
    p.add_argument("dir", help="ETL output folder (or its quality.json)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--html", action="store_true", help="print the path of the HTML report")
    p.add_argument("--open", action="store_true", help="open the HTML report in a browser")
    _keys_option(p, keyring)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("register", help="register a dataset locally and announce its metadata")
    p.add_argument("--name", required=True)
    p.add_argument("--dataset", help="ETL output folder to register")
    p.add_argument("--data-dir", help=f"node data folder (default ${DEFAULT_DATA_DIR_ENV} or ./node-data)")
    p.add_argument("--manager", help="manager base URL, e.g. https://manager.example:8443")
    p.add_argument("--token-file", help="file holding this node's API token")
    p.add_argument("--ca-file", help="CA bundle for the manager's TLS certificate")
    p.add_argument("--announce-only", action="store_true", help="announce an already registered version")
    p.add_argument("--version", type=int, help="with --announce-only: the version (default latest)")
    _keys_option(p, keyring)
    p.set_defaults(func=cmd_register)


def _keys_option(p: argparse.ArgumentParser, keyring) -> None:
    p.add_argument("--keys-file", help="keyring of encryption at rest (JSON, fedhaem_kernel.atrest); on a node "
                                       "the node's own keyring is the default")
    p.set_defaults(keyring=keyring)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedhaem-node", description="FedHaem node: data commands")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
