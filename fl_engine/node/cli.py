"""`fedhaem-node`: the worker node of a hospital.

    fedhaem-node keygen --key-dir DIR
        EC P-384 key pair for SuperNode authentication; prints the public key (OpenSSH line,
        the format `flwr supernode register` takes) for the manager to approve.
    fedhaem-node start --manager URL --superlink HOST:PORT --key-dir DIR --data-dir DIR
                       [--port N] [--name NAME] [--token-file F] [--root-certificates CA]
        Runs the Flower SuperNode (TLS + node authentication) with the prefork ClientApp
        launcher, and sends heartbeats to the manager. ClientApps read only datasets registered
        in DIR's local registry. Keeps running until SIGTERM / Ctrl-C: a SuperNode that exits
        (its SuperLink went away and refused it, a crash) is started again after a back-off of
        1, 2, 4 ... at most 30 s; heartbeats that fail (manager down) are logged and retried.
    fedhaem-node profile add NAME --home HOME --manager URL --superlink HOST:PORT
                       --root-certificates CA --token-file F [--name NODE] [--key-dir D] [--data-dir D]
        A manager profile in a node home (one per manager the hospital serves: own key pair,
        token, TLS root, dataset registry, approvals store; fl_engine/node/profiles.py,
        docs/multi-manager.md). Prints the profile's SuperNode public key for that manager.
    fedhaem-node start --home HOME [--profile NAME ...]
        One SuperNode per profile (or the ones named), each supervised and restarted as above,
        each sending heartbeats with its own token to its own manager.
    fedhaem-node register --home HOME --profile NAME --name D --dataset ETL_OUT [--no-announce]
        Registers an ETL output in that profile's registry only and announces it to that manager
        with that profile's token (the rest as etl.cli's register).
    fedhaem-node status --home HOME [--json]
        The profiles, their manager identity, datasets and state (what `start` last wrote).
    fedhaem-node budget (--home HOME | --data-dir DIR) [--dataset D] [--set-epsilon E [--set-delta D]] [--json]
        The privacy-budget ledger of the node (fl_engine/node/budget.py, docs/privacy-budget.md):
        per dataset its (epsilon, delta) budget, what DP runs have spent and what remains; one
        ledger per node home, shared by its manager profiles. --set-epsilon sets a dataset's budget.
    fedhaem-node scores --dataset DIR [--json]
        On an ETL output folder, at the hospital: on how many patients each conventional score of
        the use case is computable, why the others are not (missing or not-tested inputs, APL
        for ELN 2022), and the IPSS-M scenario spread; a score under 80 % would not be compared
        in a study. Nothing leaves the node.
    fedhaem-node encrypt-at-rest (--data-dir DIR | --home HOME [--profile P]) [--etl-out DIR ...]
                                 [--migrate] [--json]
        Encryption at rest (docs/encryption-at-rest.md): counts the node's patient-level files
        (registered tables and reports, ETL outputs named) per key, plaintext included; --migrate
        encrypts the plaintext ones in place (atomic per file, safe to re-run).
    fedhaem-node rotate-at-rest-keys (--data-dir DIR | --home HOME [--profile P]) [--etl-out DIR ...]
                                     [--new-key] [--retire KEY_ID] [--json]
        Re-wraps every encrypted node file's data key under the current key-encryption key (a
        header rewrite per file); --new-key first adds a fresh KEK to the key file and makes it
        current; --retire drops an old KEK once no file is under it.
    fedhaem-node etl|map-check|report|register ...   (the node operator's commands of etl.cli;
        etl, report and register use the keyring of --data-dir or --home/--profile: what they
        write is encrypted at rest)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from etl.cli import add_subcommands, data_dir_of
from etl.table import read_table_file
from fedhaem_kernel.atrest import AtRestError, KeyringError, LocalKeyring
from fl_engine.deploy.pki import ensure_node_keys, node_key_paths
from fl_engine.deploy.processes import start_supernode
from fl_engine.node.budget import DEFAULT_DELTA_BUDGET, LedgerError, home_ledger_dir, set_budget, summary
from fl_engine.node.datasets import (encryption_on, list_datasets, migrate_plaintext, node_keyring,
                                     rotate_keys)
from fl_engine.node import policy as node_policy
from fl_engine.node.heartbeat import heartbeat_payload, send_heartbeat
from fl_engine.node.profiles import ProfileError, add_profile, load_profile, load_profiles, profile_state
from fl_engine.scores.conventional import COVERAGE_MIN, LABELS, coverage_report

log = logging.getLogger("fedhaem.node")


def cmd_keygen(args) -> int:
    keys = node_key_paths(args.key_dir)
    if keys.private_key.exists() and not args.force:
        print(f"# key pair already exists in {args.key_dir} (use --force to replace it)", file=sys.stderr)
    keys = ensure_node_keys(args.key_dir, overwrite=args.force)
    print(keys.public_text())
    return 0


class _Served:
    """One SuperNode this start process supervises: its manager, token, registry and back-off
    (one per manager profile; the single-manager flags make one without a profile)."""

    def __init__(self, name, manager, token, data_dir, start, profile=None, node_options=None):
        self.name, self.manager, self.token, self.data_dir = name, manager, token, Path(data_dir)
        self.start, self.profile = start, profile
        # the SuperNode's node config as its ClientApps read it: the heartbeat reports the same
        # privacy ledger and the same policy-file limits the ClientApps apply
        self.node_cfg = {"data-dir": str(Path(data_dir).resolve()), **(node_options or {})}
        self.node = None
        self.restarts, self.up_since, self.restart_at, self.next_beat = 0, 0.0, None, 0.0

    @property
    def label(self) -> str:
        return f"{self.name} ({'profile ' + self.profile.name if self.profile else self.manager})"

    def beat(self, status: str) -> None:
        node_id = self.node.node_id() if self.node is not None else None
        send_heartbeat(self.manager, self.token,
                       heartbeat_payload(self.name, self.data_dir, status, node_id, node_cfg=self.node_cfg))
        if self.profile is not None:
            pid = self.node.process.pid if self.node is not None and self.node.process.popen else None
            self.profile.write_status(state=status, pid=os.getpid(), supernode_pid=pid, flower_node_id=node_id,
                                      restarts=self.restarts)


def _served_from_flags(args) -> _Served | int:
    keys = node_key_paths(args.key_dir)
    if not keys.private_key.exists():
        print(f"error: no node key in {args.key_dir}; run `fedhaem-node keygen --key-dir {args.key_dir}` "
              "and have the manager approve the public key", file=sys.stderr)
        return 2
    if args.root_certificates and not Path(args.root_certificates).is_file():
        print(f"error: --root-certificates {args.root_certificates}: no such file", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    name = args.name or socket.gethostname()
    state_dir = Path(args.state_dir or data_dir.parent / f".fedhaem-node-{name}")
    options = {"manager": args.manager,
               "token-file": str(Path(args.token_file).resolve()) if args.token_file else ""}
    if args.policy_file:
        options["policy-file"] = str(Path(args.policy_file).resolve())

    def start():
        return start_supernode(name, args.superlink, args.root_certificates, keys.private_key, data_dir,
                               state_dir, runtime_port=args.port, launcher=args.launcher,
                               tuning=args.flower_tuning, release_after_s=args.release_after,
                               node_options=options)
    return _Served(name, args.manager, token, data_dir, start, node_options=options)


def _served_from_home(args) -> list[_Served] | int:
    if args.port:
        print("error: --port is for the single-manager form; each profile's SuperNode takes a free port",
              file=sys.stderr)
        return 2
    try:
        profiles = load_profiles(args.home, args.profile or None)
        for prof in profiles:
            prof.check_identity()
            token = prof.token()
            if not node_key_paths(prof.key_dir).private_key.is_file():
                raise ProfileError(f"profile {prof.name}: no node key in {prof.key_dir}")
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    served = []
    for prof in profiles:
        prof.data_dir.mkdir(parents=True, exist_ok=True)

        def start(prof=prof):
            return start_supernode(prof.config.node_name, prof.config.superlink, prof.root_certificates,
                                   node_key_paths(prof.key_dir).private_key, prof.data_dir, prof.state_dir,
                                   launcher=args.launcher, tuning=args.flower_tuning,
                                   release_after_s=args.release_after,
                                   node_options=_with_policy_file(prof.node_options(), args.policy_file))
        served.append(_Served(prof.config.node_name, prof.config.manager, prof.token(), prof.data_dir, start,
                              profile=prof, node_options=_with_policy_file(prof.node_options(), args.policy_file)))
    return served


def _with_policy_file(options: dict, policy_file: str | None) -> dict:
    """The node options with the operator's local policy limits (`--policy-file`), if given."""
    return {**options, "policy-file": str(Path(policy_file).resolve())} if policy_file else options


def _check_policy_file(path: str | None) -> str | None:
    """Why the policy-file cannot be used (named), or None: checked before any SuperNode starts."""
    if not path:
        return None
    try:
        node_policy.read_limits_file({"policy-file": str(Path(path).resolve())})
    except node_policy.PolicyError as err:
        return f"--policy-file: {err}"
    return None


def cmd_start(args) -> int:
    why = _check_policy_file(args.policy_file)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if args.home:
        clash = [f for f in ("manager", "superlink", "key_dir", "data_dir", "token_file", "root_certificates",
                             "name", "state_dir") if getattr(args, f)]
        if clash:
            print(f"error: --home takes each manager's settings from its profile; drop "
                  f"{', '.join('--' + c.replace('_', '-') for c in clash)}", file=sys.stderr)
            return 2
        served = _served_from_home(args)
    else:
        missing = [f for f in ("manager", "superlink", "key_dir", "data_dir") if not getattr(args, f)]
        if missing:
            print(f"error: without --home, start needs {', '.join('--' + m.replace('_', '-') for m in missing)}",
                  file=sys.stderr)
            return 2
        if args.profile:
            print("error: --profile selects profiles of a node home: give --home", file=sys.stderr)
            return 2
        served = _served_from_flags(args)
    if isinstance(served, int):
        return served
    served = served if isinstance(served, list) else [served]
    stopping = {"flag": False}

    def _stop(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        for sv in served:
            sv.node = sv.start()
            sv.up_since = time.monotonic()
            log.info("node %s: SuperNode pid %d (log %s)", sv.label, sv.node.process.pid, sv.node.process.log_path)
        while not stopping["flag"]:
            for sv in served:
                _supervise(sv, args.heartbeat_interval)
            time.sleep(0.5)
    finally:
        for sv in served:
            if sv.node is not None:
                sv.node.stop()
                sv.beat("offline")
                if sv.profile is not None:
                    sv.profile.write_status(state="stopped", pid=None, flower_node_id=sv.node.node_id())
    return 0


def _supervise(sv: _Served, heartbeat_interval: float) -> None:
    """One step of one SuperNode's watch: restart it after a back-off when it died, heartbeat."""
    node, now = sv.node, time.monotonic()
    if sv.restart_at is None and not node.alive():
        dead = [p for p in node.processes() if not p.alive()]
        if now - sv.up_since >= RESTART_RESET_S:
            sv.restarts = 0  # it ran a while: a new failure starts the back-off again
        sv.restarts += 1
        wait = restart_backoff(sv.restarts)
        if activation_refused(node):
            # Killed without deactivating: the SuperLink holds the node online until its
            # last heartbeat expires (60 s in Flower 1.42) and refuses it meanwhile.
            wait = min(wait, ACTIVATION_RETRY_S)
            log.warning("the SuperLink still holds node %s as online (it was not stopped cleanly); "
                        "retrying every %g s until it lets go (at most a minute)", sv.label, wait)
        log.error("%s exited with %s (see %s); restarting the SuperNode in %g s (attempt %d)",
                  dead[0].name, dead[0].popen.returncode, dead[0].log_path, wait, sv.restarts)
        sv.beat("error")
        sv.restart_at = now + wait
    if sv.restart_at is not None:
        if now < sv.restart_at:
            return
        node.restart()
        log.info("node %s: SuperNode restarted, pid %d", sv.label, node.process.pid)
        sv.restart_at, sv.up_since, sv.next_beat = None, now, 0.0
    if now >= sv.next_beat:
        sv.beat("online")
        sv.next_beat = time.monotonic() + heartbeat_interval


def cmd_profile_add(args) -> int:
    try:
        prof = add_profile(args.home, args.profile_name, manager=args.manager, superlink=args.superlink,
                           root_certificates=args.root_certificates, token_file=args.token_file,
                           node_name=args.name or socket.gethostname(), key_dir=args.key_dir,
                           data_dir=args.data_dir, replace=args.replace)
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"# profile {prof.name} in {prof.folder}: manager {prof.config.manager}, identity "
          f"{prof.config.manager_id}", file=sys.stderr)
    print(f"# register datasets for this manager only with: fedhaem-node register --data-dir {prof.data_dir} "
          f"--manager {prof.config.manager} --token-file {prof.token_file} ...", file=sys.stderr)
    print(f"# the manager approves this SuperNode public key:", file=sys.stderr)
    print(node_key_paths(prof.key_dir).public_text())
    return 0


def cmd_status(args) -> int:
    try:
        rows = [profile_state(p) for p in load_profiles(args.home, args.profile or None)]
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"home": str(Path(args.home).resolve()), "profiles": rows}, indent=1))
        return 0
    for r in rows:
        ident = "ok" if r["identity_ok"] else f"CHANGED: {r['identity_error']}"
        print(f"{r['profile']}: {r['state']}; node {r['node_name']} (Flower id {r['flower_node_id'] or '-'}) "
              f"at {r['manager']} via {r['superlink']}")
        print(f"    manager identity {r['manager_id']} ({ident}); key sha256 {r['public_key_sha256']}")
        print(f"    datasets: {', '.join(r['datasets']) or 'none registered'}")
    return 0


def cmd_budget(args) -> int:
    if bool(args.home) == bool(args.data_dir):
        print("error: give --home (a node home) or --data-dir (a node started without one)", file=sys.stderr)
        return 2
    try:
        if args.home:
            folder = home_ledger_dir(args.home)
            names = [d["name"] for p in load_profiles(args.home) for d in list_datasets(p.data_dir)]
        else:
            folder = Path(args.data_dir) / "privacy"
            names = [d["name"] for d in list_datasets(args.data_dir)]
        if args.set_epsilon is not None:
            if not args.dataset:
                print("error: --set-epsilon needs --dataset", file=sys.stderr)
                return 2
            set_budget(folder, args.dataset, args.set_epsilon, args.set_delta)
        rows = summary(folder, sorted(set(names)))
    except (ProfileError, LedgerError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dataset:
        rows = [r for r in rows if r["dataset"] == args.dataset]
    if args.json:
        print(json.dumps({"ledger": str(folder.resolve()), "datasets": rows}, indent=1))
        return 0
    print(f"# privacy ledger {folder}")
    for r in rows:
        print(f"{r['dataset']}: spent epsilon {r['spent_epsilon']:.4g} of {r['budget_epsilon']:g} "
              f"(remaining {r['remaining_epsilon']:.4g}), delta {r['spent_delta']:.3g} of {r['budget_delta']:g}; "
              f"{r['dp_runs']} DP run(s) of {r['runs']} recorded; budget from {r['budget_source']}")
    if not rows:
        print("no dataset registered and no run recorded")
    return 0


RESTART_BACKOFF_MAX_S = 30.0
RESTART_RESET_S = 60.0
ACTIVATION_RETRY_S = 5.0


def restart_backoff(attempt: int) -> float:
    """Seconds before SuperNode restart number `attempt` (1, 2, 3 ...): 1, 2, 4 ... at most 30."""
    return min(RESTART_BACKOFF_MAX_S, 2.0 ** (attempt - 1))


def activation_refused(node) -> bool:
    """True when the SuperNode's last start ended on Flower's "Failed to activate SuperNode"."""
    last_start = node.process.log_text().rsplit("\n=== ", 1)[-1]
    return "Failed to activate SuperNode" in last_start


def cmd_scores(args) -> int:
    out = Path(args.dataset)
    mf = out / "manifest.json"
    if not mf.is_file() or not (out / "table.parquet").is_file():
        print(f"error: {out}: not an ETL output folder (manifest.json and table.parquet); run "
              "`fedhaem-node etl` first", file=sys.stderr)
        return 2
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        use_case = manifest["use_case"]
    except (ValueError, KeyError) as e:
        print(f"error: {mf}: unreadable manifest ({e})", file=sys.stderr)
        return 2
    try:
        table = read_table_file(out / "table.parquet", node_keyring(data_dir_of(args), create=False)
                                if not args.keys_file else LocalKeyring.from_file(args.keys_file))
    except (AtRestError, KeyringError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rep = coverage_report(table, use_case, top=args.top)
    if args.json:
        print(json.dumps({"use_case": use_case, "not_tested": manifest.get("not_tested", []), "scores": rep},
                         indent=1))
        return 0
    print(f"{use_case}, {len(table)} patients; declared not tested: "
          f"{', '.join(manifest.get('not_tested') or []) or 'none'}")
    for name, c in rep.items():
        verdict = "" if c["sufficient"] else f"  (under {COVERAGE_MIN:.0%}: a study would not compare it)"
        print(f"{LABELS[name]}: computable on {c['n']} of {c['of']} patients ({c['fraction']:.0%}){verdict}")
        for why, k in c["reasons"].items():
            print(f"    {k:6d}  {why}")
        if "spread" in c and c["spread"]["median"] is not None:
            sp = c["spread"]
            print(f"    scenario spread worst - best: median {sp['median']:g}, 90th centile {sp['p90']:g}, "
                  f"max {sp['max']:g}; none for {sp['none']}, above 1 for {sp['above_limit']} patients")
    if not rep:
        print(f"no conventional score of {use_case} has its inputs in this table")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedhaem-node", description="FedHaem worker node")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="create the node's authentication key pair")
    k.add_argument("--key-dir", required=True)
    k.add_argument("--force", action="store_true", help="replace an existing key pair")
    k.set_defaults(func=cmd_keygen)
    s = sub.add_parser("start", help="run the SuperNode(s) and heartbeats")
    s.add_argument("--home", default=None, help="node home: one SuperNode per manager profile in it")
    s.add_argument("--profile", action="append", default=None,
                   help="with --home: serve only this profile (repeatable; default: every profile)")
    s.add_argument("--manager", default=None, help="portal base URL, e.g. https://manager.example")
    s.add_argument("--superlink", default=None, help="SuperLink Fleet address HOST:PORT")
    s.add_argument("--key-dir", default=None)
    s.add_argument("--data-dir", default=None, help="local dataset registry")
    s.add_argument("--port", type=int, default=None, help="SuperNode Runtime API port (default: free port)")
    s.add_argument("--name", default=None, help="node name (default: host name)")
    s.add_argument("--token-file", default=None, help="file with the portal API token")
    s.add_argument("--root-certificates", default=None, help="CA certificate of the SuperLink")
    s.add_argument("--launcher", choices=("prefork", "flower"), default="prefork")
    s.add_argument("--release-after", type=float, default=None,
                   help="seconds without work after which the prefork launcher sheds torch and the "
                        "ClientApp (default 300; 0 keeps it warm)")
    s.add_argument("--flower-tuning", action=argparse.BooleanOptionalAction, default=True,
                   help="shorten Flower 1.42's fixed SuperNode waits (fl_engine/deploy/flower_tuning.py; "
                        "on by default, --no-flower-tuning for stock Flower)")
    s.add_argument("--heartbeat-interval", type=float, default=30.0, help="seconds")
    s.add_argument("--policy-file", default=None,
                   help="JSON {\"*\" or dataset name: partial policy}: local limits the node applies on top of "
                        "each dataset's registered policy (the stricter wins); announced to the manager")
    s.add_argument("--state-dir", default=None, help="logs and Flower state (default: next to data dir)")
    s.set_defaults(func=cmd_start)
    pr = sub.add_parser("profile", help="manager profiles of a node home (one per manager)")
    prs = pr.add_subparsers(dest="profile_command", required=True)
    pa = prs.add_parser("add", help="add a manager profile: own key pair, token, TLS root, registry, approvals")
    pa.add_argument("profile_name", metavar="NAME", help="'default' = the home's top folder; others go "
                                                         "under HOME/managers/NAME")
    pa.add_argument("--home", required=True)
    pa.add_argument("--manager", required=True, help="that manager's portal base URL")
    pa.add_argument("--superlink", required=True, help="that manager's SuperLink Fleet address HOST:PORT")
    pa.add_argument("--root-certificates", required=True, help="the TLS root (CA) to trust for that manager")
    pa.add_argument("--token-file", required=True, help="the node token that manager issued (copied in)")
    pa.add_argument("--name", default=None, help="this node's name at that manager (default: host name)")
    pa.add_argument("--key-dir", default=None, help="adopt an existing key pair (default: a new one)")
    pa.add_argument("--data-dir", default=None, help="adopt an existing registry (default: PROFILE/data)")
    pa.add_argument("--replace", action="store_true", help="re-pin an existing profile (new CA or URL)")
    pa.set_defaults(func=cmd_profile_add)
    st = sub.add_parser("status", help="the profiles of a node home and their state")
    st.add_argument("--home", required=True)
    st.add_argument("--profile", action="append", default=None)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    b = sub.add_parser("budget", help="privacy budget per dataset: spent and remaining epsilon (local)")
    b.add_argument("--home", default=None, help="node home (one ledger shared by its manager profiles)")
    b.add_argument("--data-dir", default=None, help="the registry of a node started without a home")
    b.add_argument("--dataset", default=None, help="only this dataset (required with --set-epsilon)")
    b.add_argument("--set-epsilon", type=float, default=None, help="set the dataset's epsilon budget")
    b.add_argument("--set-delta", type=float, default=DEFAULT_DELTA_BUDGET,
                   help=f"with --set-epsilon: its delta budget (default {DEFAULT_DELTA_BUDGET:g})")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_budget)
    c = sub.add_parser("scores", help="coverage of the conventional scores on an ETL output (local)")
    c.add_argument("--dataset", required=True, help="an ETL output folder")
    c.add_argument("--top", type=int, default=8, help="reasons listed per score")
    c.add_argument("--json", action="store_true")
    c.add_argument("--data-dir", default=None, help="node data folder whose keyring decrypts the ETL output")
    c.add_argument("--keys-file", default=None, help="keyring of encryption at rest (default: the node's)")
    c.set_defaults(func=cmd_scores)
    for name, helptext, func in (
            ("encrypt-at-rest", "count node files per key; --migrate encrypts plaintext ones in place",
             cmd_encrypt_at_rest),
            ("rotate-at-rest-keys", "re-wrap every encrypted node file under the current key (--new-key)",
             cmd_rotate_at_rest_keys)):
        a = sub.add_parser(name, help=helptext)
        a.add_argument("--data-dir", default=None, help="the node's data folder (a node started without a home)")
        a.add_argument("--home", default=None, help="node home: every profile's data folder (or --profile's)")
        a.add_argument("--profile", action="append", default=None, help="with --home: only this profile")
        a.add_argument("--etl-out", action="append", default=[], metavar="DIR",
                       help="an ETL output folder to include (repeatable)")
        a.add_argument("--json", action="store_true")
        a.add_argument("-v", "--verbose", action="store_true", help="name every file and what was done")
        if name == "encrypt-at-rest":
            a.add_argument("--migrate", action="store_true", help="encrypt the plaintext files in place")
        else:
            a.add_argument("--new-key", action="store_true",
                           help="add a new KEK to the key file and make it current (refused when the keys come "
                                "from FEDHAEM_NODE_AT_REST_KEYS: change the environment instead)")
            a.add_argument("--retire", metavar="KEY_ID", help="after re-wrapping, remove this old KEK from the key "
                                                              "file (refused while any file is still under it)")
        a.set_defaults(func=func)
    add_subcommands(sub, keyring=_node_keyring)
    for name in ("etl", "report"):
        _profile_keyring(sub.choices[name])
    _profile_register(sub.choices["register"])
    return p


def _profile_keyring(cmd: argparse.ArgumentParser) -> None:
    """`--data-dir` or `--home HOME --profile NAME` on etl / report: whose keyring encrypts the
    ETL output (use the registry it will be registered into)."""
    cmd.add_argument("--data-dir", default=None, help="the node's data folder, whose keyring encrypts "
                                                      "(default $FEDHAEM_NODE_DATA_DIR or ./node-data)")
    cmd.add_argument("--home", default=None, help="node home: with --profile, use that profile's keyring")
    cmd.add_argument("--profile", default=None, help="the manager profile whose keyring encrypts")
    inner = cmd.get_default("func")

    def run(args) -> int:
        if args.home or args.profile:
            if not (args.home and args.profile) or args.data_dir:
                print("error: --home and --profile go together, instead of --data-dir", file=sys.stderr)
                return 2
            try:
                args.data_dir = str(load_profile(args.home, args.profile).data_dir)
            except ProfileError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        return inner(args)

    cmd.set_defaults(func=run)


def _node_keyring(args):
    """etl.cli's keyring for etl/report/register on a node: --keys-file, else the node's own
    (fl_engine.node.datasets.node_keyring of the data dir, made at first use while encryption
    at rest is on); sets args.encrypt from FEDHAEM_NODE_AT_REST_ENCRYPTION."""
    args.encrypt = encryption_on()
    if args.keys_file:
        return LocalKeyring.from_file(args.keys_file)
    return node_keyring(data_dir_of(args), create=args.encrypt)


def _node_data_dirs(args) -> list[Path] | int:
    if bool(args.home) == bool(args.data_dir):
        print("error: give --home (a node home) or --data-dir (a node started without one)", file=sys.stderr)
        return 2
    if args.data_dir:
        return [Path(args.data_dir)]
    try:
        return [prof.data_dir for prof in load_profiles(args.home, args.profile or None)]
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _progress(args):
    def progress(path, outcome):
        if args.verbose:
            print(f"{outcome}: {path}", file=sys.stderr)
    return progress


def cmd_encrypt_at_rest(args) -> int:
    dirs = _node_data_dirs(args)
    if isinstance(dirs, int):
        return dirs
    if args.migrate and not encryption_on():
        print("error: FEDHAEM_NODE_AT_REST_ENCRYPTION is off: switch it on before migrating", file=sys.stderr)
        return 2
    try:
        rows = [migrate_plaintext(d, args.etl_out if i == 0 else (), apply=args.migrate, progress=_progress(args))
                for i, d in enumerate(dirs)]
    except (KeyringError, AtRestError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"data_dirs": rows}, indent=1))
    else:
        for r in rows:
            if args.migrate:
                print(f"{r['data_dir']}: encrypted {r['changed']} plaintext file(s) under {r['current_key']}, "
                      f"{r['unchanged']} already encrypted, {len(r['errors'])} error(s)")
                for e in r["errors"]:
                    print(f"  {e}", file=sys.stderr)
            census = ", ".join(f"{k}: {n}" for k, n in sorted(r["census"].items())) or "none"
            print(f"{r['data_dir']}: files per key: {census}")
            if r["census"].get("plaintext") and not args.migrate:
                print("  plaintext files hold patient rows: encrypt them with --migrate")
    return 1 if any(r.get("errors") for r in rows) else 0


def cmd_rotate_at_rest_keys(args) -> int:
    dirs = _node_data_dirs(args)
    if isinstance(dirs, int):
        return dirs
    try:
        out = rotate_keys(dirs, args.etl_out, new_key=args.new_key, retire=args.retire, progress=_progress(args))
    except (KeyringError, AtRestError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for r in out["keyrings"]:
            print(f"# keyring {r['keyring']} ({', '.join(r['data_dirs'])})")
            if "new_key" in r:
                print(f"new key-encryption key {r['new_key']} is current (was {r['previous_key']})")
            print(f"re-wrapped {r['changed']} file(s), {r['unchanged']} already under {r['current_key']}, "
                  f"{r['plaintext']} plaintext (see fedhaem-node encrypt-at-rest --migrate), "
                  f"{len(r['errors'])} error(s)")
            for e in r["errors"]:
                print(f"  {e}", file=sys.stderr)
            print("files per key: " + (", ".join(f"{k}: {n}" for k, n in sorted(r["key_ids"].items())) or "none"))
            if r.get("retired"):
                print(f"retired key {r['retired']}")
    return 1 if any(r["errors"] for r in out["keyrings"]) else 0


def _profile_register(reg: argparse.ArgumentParser) -> None:
    """`fedhaem-node register --home HOME --profile NAME ...`: register into that manager
    profile's registry and announce to that manager with its token (etl.cli's register)."""
    reg.add_argument("--home", default=None, help="node home: with --profile, register for that manager only")
    reg.add_argument("--profile", default=None, help="the manager profile whose registry receives the dataset")
    reg.add_argument("--no-announce", action="store_true",
                     help="with --profile: register locally, announce later (--announce-only)")
    inner = reg.get_default("func")

    def register(args) -> int:
        if args.home or args.profile:
            if not (args.home and args.profile):
                print("error: --home and --profile go together", file=sys.stderr)
                return 2
            clash = [f for f in ("data_dir", "manager", "token_file") if getattr(args, f)]
            if clash:
                print(f"error: --profile takes the registry, manager and token from the profile; drop "
                      f"{', '.join('--' + c.replace('_', '-') for c in clash)}", file=sys.stderr)
                return 2
            try:
                prof = load_profile(args.home, args.profile)
            except ProfileError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            args.data_dir = str(prof.data_dir)
            if not args.no_announce:
                args.manager, args.token_file = prof.config.manager, str(prof.token_file)
        elif args.no_announce:
            print("error: --no-announce is for --profile (without it, leave out --manager)", file=sys.stderr)
            return 2
        return inner(args)

    reg.set_defaults(func=register)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
