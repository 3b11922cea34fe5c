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
    fedhaem-node scores --dataset DIR [--json]
        On an ETL output folder, at the hospital: on how many patients each conventional score of
        the use case is computable, why the others are not (missing or not-tested inputs, APL
        for ELN 2022), and the IPSS-M scenario spread; a score under 80 % would not be compared
        in a study. Nothing leaves the node.
    fedhaem-node etl|map-check|report|register ...   (the node operator's commands of etl.cli)
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from etl.cli import add_subcommands
from etl.table import read_table_file
from fl_engine.deploy.pki import ensure_node_keys, node_key_paths
from fl_engine.deploy.processes import start_supernode
from fl_engine.node.heartbeat import heartbeat_payload, send_heartbeat
from fl_engine.scores.conventional import COVERAGE_MIN, LABELS, coverage_report

log = logging.getLogger("fedhaem.node")


def cmd_keygen(args) -> int:
    keys = node_key_paths(args.key_dir)
    if keys.private_key.exists() and not args.force:
        print(f"# key pair already exists in {args.key_dir} (use --force to replace it)", file=sys.stderr)
    keys = ensure_node_keys(args.key_dir, overwrite=args.force)
    print(keys.public_text())
    return 0


def cmd_start(args) -> int:
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
    node = start_supernode(name, args.superlink, args.root_certificates, keys.private_key, data_dir,
                           state_dir, runtime_port=args.port, launcher=args.launcher,
                           tuning=args.flower_tuning, release_after_s=args.release_after,
                           node_options={"manager": args.manager,
                                         "token-file": str(Path(args.token_file).resolve()) if args.token_file else ""})
    log.info("node %s: SuperNode pid %d (log %s)", name, node.process.pid, node.process.log_path)
    stopping = {"flag": False}

    def _stop(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    restarts, up_since, restart_at = 0, time.monotonic(), None
    try:
        next_beat = 0.0
        while not stopping["flag"]:
            now = time.monotonic()
            if restart_at is None and not node.alive():
                dead = [p for p in node.processes() if not p.alive()]
                if now - up_since >= RESTART_RESET_S:
                    restarts = 0  # it ran a while: a new failure starts the back-off again
                restarts += 1
                wait = restart_backoff(restarts)
                if activation_refused(node):
                    # Killed without deactivating: the SuperLink holds the node online until its
                    # last heartbeat expires (60 s in Flower 1.42) and refuses it meanwhile.
                    wait = min(wait, ACTIVATION_RETRY_S)
                    log.warning("the SuperLink still holds node %s as online (it was not stopped cleanly); "
                                "retrying every %g s until it lets go (at most a minute)", name, wait)
                log.error("%s exited with %s (see %s); restarting the SuperNode in %g s (attempt %d)",
                          dead[0].name, dead[0].popen.returncode, dead[0].log_path, wait, restarts)
                send_heartbeat(args.manager, token, heartbeat_payload(name, data_dir, "error", node.node_id()))
                restart_at = now + wait
            if restart_at is not None:
                if now < restart_at:
                    time.sleep(0.2)
                    continue
                node.restart()
                log.info("node %s: SuperNode restarted, pid %d", name, node.process.pid)
                restart_at, up_since, next_beat = None, now, 0.0
            if now >= next_beat:
                send_heartbeat(args.manager, token, heartbeat_payload(name, data_dir, "online", node.node_id()))
                next_beat = time.monotonic() + args.heartbeat_interval
            time.sleep(0.5)
    finally:
        node.stop()
        send_heartbeat(args.manager, token, heartbeat_payload(name, data_dir, "offline", node.node_id()))
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
    table = read_table_file(out / "table.parquet")
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
    s = sub.add_parser("start", help="run the SuperNode and heartbeats")
    s.add_argument("--manager", required=True, help="portal base URL, e.g. https://manager.example")
    s.add_argument("--superlink", required=True, help="SuperLink Fleet address HOST:PORT")
    s.add_argument("--key-dir", required=True)
    s.add_argument("--data-dir", required=True, help="local dataset registry")
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
    s.add_argument("--state-dir", default=None, help="logs and Flower state (default: next to data dir)")
    s.set_defaults(func=cmd_start)
    c = sub.add_parser("scores", help="coverage of the conventional scores on an ETL output (local)")
    c.add_argument("--dataset", required=True, help="an ETL output folder")
    c.add_argument("--top", type=int, default=8, help="reasons listed per score")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_scores)
    add_subcommands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
