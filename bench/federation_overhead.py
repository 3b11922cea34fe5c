"""What a federated round costs beyond the nodes' own training, on this machine.

    python bench/federation_overhead.py [--json] [--rounds 5] [--nodes 3] [--tuning]

Runs the same FedHaem study (DeepSurv on a generated MDS cohort of --patients rows split
60/30/10, 1 local epoch) through real processes on 127.0.0.1 with TLS and SuperNode
authentication, in these deployments:

  bare     Flower defaults: SuperNodes with Flower's own flower-superexec (a fresh flwr-clientapp
           process per message), SuperExec task poll 1 s, ServerApp polling every 3 s (what
           Grid.send_and_receive does), no patch.
  ours     the FedHaem default deployment (fl_engine.deploy): prefork ClientApp launcher,
           FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1, ServerApp polling every 0.1 s. No patch.
  ours_fused   ours with run config fuse_evaluation=true: each train message also evaluates
           the incoming global model, so a round is one message phase (+ one final evaluate).
  tuned, tuned_fused   (--tuning) the same + fl_engine.deploy.flower_tuning (Flower's fixed
           SuperNode sleeps and initial pull back-off shortened; opt-in, the one patch module).

Figures (medians over the rounds of one run; seconds):
  round_time_s      wall time of one round = train phase + evaluate phase, measured by the
                    ServerApp (the metrics file's global round_time_s; with fused evaluation,
                    the time from one round's start to the next one's).
  round_overhead_s  round_time_s minus the slowest node's local training time in that round
                    (encoding + local epochs, measured inside the ClientApp): what the
                    federation machinery costs.
  run_start_s       from `flwr run` to the ServerApp's first line (FAB build, run start).
  run_total_s       from `flwr run` to the run being finished.
  portal    (measured unless --no-portal) the portal's default deployment (--portal-config,
           default tuned_fused: FLOWER_TUNING and FLOWER_FUSED_EVALUATION on) driven by the
           portal, as a coordinator does it: Django on a fresh SQLite + embedded Redis, nodes and datasets
           announced, study approved, `start_run` -> a real Celery worker -> the Flower adapter ->
           metrics POSTed by the ServerApp to a daphne-served portal -> MLflow registration.
  portal_vs_bare_ratio  whole 5-round run through the portal (start_run to status finished,
                    model registered) / the bare `flwr run` of the same app (submit to finished).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl_engine.cohort import generate_mds_cohort, split_nodes  # noqa: E402
from fl_engine.deploy import control  # noqa: E402
from fl_engine.deploy.local import APP_DIR, LocalFederation  # noqa: E402

CONFIGS = {
    "bare": {"launcher": "flower", "poll_interval_s": None, "tuning": False, "server_poll_s": 3.0,
             "fuse": False},
    "ours": {"launcher": "prefork", "poll_interval_s": 0.1, "tuning": False, "server_poll_s": 0.1,
             "fuse": False},
    "ours_fused": {"launcher": "prefork", "poll_interval_s": 0.1, "tuning": False, "server_poll_s": 0.1,
                   "fuse": True},
    "tuned": {"launcher": "prefork", "poll_interval_s": 0.1, "tuning": True, "server_poll_s": 0.1,
              "fuse": False},
    "tuned_fused": {"launcher": "prefork", "poll_interval_s": 0.1, "tuning": True, "server_poll_s": 0.1,
                    "fuse": True},
}


def measure(name: str, tables: dict, rounds: int, root: Path, comparison: bool = True,
            warmup: bool = False) -> dict:
    """One run of `rounds` on a fresh federation deployed as `name`; with `warmup`, after a first
    one-round run that is not measured (what a federation that has run before costs)."""
    c = CONFIGS[name]
    metrics = root / f"{name}-metrics.jsonl"
    with LocalFederation(root / name, launcher=c["launcher"], poll_interval_s=c["poll_interval_s"],
                         tuning=c["tuning"]) as fed:
        for node, table in tables.items():
            fed.add_node(node, table, dataset="bench")
        fed.wait_nodes_online(180)
        if warmup:
            first = control.start_run(APP_DIR, {
                "dataset": "bench", "num_rounds": 1, "min_nodes": len(tables), "local_epochs": 1,
                "poll_interval_s": c["server_poll_s"], "round_timeout_s": 300.0, "fuse_evaluation": c["fuse"],
                "comparison": False, "metrics_path": str(root / f"{name}-warmup.jsonl")},
                fed.address, **fed.conn_kwargs())
            if fed.wait_run(first, 600, poll_s=0.5)["status"] != "finished:completed":
                raise RuntimeError(f"{name}: the warm-up run did not complete")
        t0 = time.time()
        run_id = control.start_run(APP_DIR, {
            "dataset": "bench", "num_rounds": rounds, "min_nodes": len(tables), "local_epochs": 1,
            "poll_interval_s": c["server_poll_s"], "round_timeout_s": 300.0, "fuse_evaluation": c["fuse"],
            "comparison": comparison, "metrics_path": str(metrics)}, fed.address, **fed.conn_kwargs())
        status = fed.wait_run(run_id, 60 * rounds + 300, poll_s=0.5)
        total = time.time() - t0
    if status["status"] != "finished:completed":
        raise RuntimeError(f"{name}: run ended {status['status']}")
    return summarise(metrics, t0, total)


def summarise(metrics: Path, t0: float, total: float) -> dict:
    """Round time, round overhead (medians), run start and total from a run's metrics file."""
    recs = [json.loads(l) for l in metrics.read_text().splitlines()]
    started = next(r["time"] for r in recs if r.get("type") == "started")
    round_times, overheads = [], []
    for r in (r for r in recs if "round" in r and r.get("phase", "round") == "round"):
        g = {m["name"]: m["value"] for m in r["metrics"] if m["node"] == "global"}
        slowest = max(m["value"] for m in r["metrics"] if m["name"] == "train_time_s")
        round_times.append(g["round_time_s"])
        overheads.append(g["round_time_s"] - slowest)
    return {"round_time_s": statistics.median(round_times), "round_overhead_s": statistics.median(overheads),
            "round_times_s": [round(x, 3) for x in round_times],
            "run_start_s": started - t0, "run_total_s": total}


def measure_portal(tables: dict, rounds: int, root: Path, config: str = "tuned_fused",
                   comparison: bool = True, warmup: bool = False) -> dict:
    """The same study started through the portal's own code path (see the module docstring), the
    federation deployed as `config` (the portal's default deployment: tuned_fused). With
    `warmup`, a first one-round run of the study goes through the same portal and worker
    unmeasured (a long-running portal has imported MLflow and opened its database before)."""
    import socket
    import subprocess

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    c = CONFIGS[config]
    if c["launcher"] != "prefork":
        raise ValueError("the portal measurement uses FedHaem's deployment (prefork launcher)")
    # The ServerApp signs its run events for the portal with this key (as the demo's SuperLink
    # does); without it the portal learns of the run's end only from the reconciler (Celery beat).
    import secrets as _secrets
    # (one key per process: Django's settings, read once, keep the first measurement's)
    events_key = Path(os.environ.get("RUN_EVENTS_KEY_FILE") or root / f"portal-run-events-key-{config}")
    if not events_key.exists():
        events_key.parent.mkdir(parents=True, exist_ok=True)
        events_key.write_text(_secrets.token_hex(32))
        events_key.chmod(0o600)
    with LocalFederation(root / f"portal-fed-{config}", launcher="prefork", poll_interval_s=0.1,
                         tuning=c["tuning"], events_key_file=events_key) as fed:
        for node, table in tables.items():
            fed.add_node(node, table, dataset="bench")
        fed.wait_nodes_online(180)
        port = free_port()
        # A second measurement in this process keeps the first's database, Redis and key (Django's
        # settings are read once); what belongs to this federation and this portal is updated in
        # the environment (the daphne child reads it) and in the settings (this process).
        for key, value in (("FEDHAEM_VAR_DIR", str(root / f"portal-var-{config}")),
                           ("EMBEDDED_REDIS_PORT", str(free_port())), ("CHANNELS_PREFIX", f"bench{port}"),
                           ("DJANGO_SETTINGS_MODULE", "portal.settings"), ("RUN_EVENTS_KEY_FILE", str(events_key))):
            os.environ.setdefault(key, value)
        here = {"FLOWER_FUSED_EVALUATION": "true" if c["fuse"] else "false", "FLOWER_CONTROL_ADDRESS": fed.address,
                "FLOWER_PKI_DIR": str(fed.pki.ca_cert.parent), "PORTAL_BASE_URL": f"http://127.0.0.1:{port}"}
        os.environ.update(here)
        import django

        django.setup()
        from celery.contrib.testing.worker import start_worker
        from django.conf import settings
        settings.FLOWER_FUSED_EVALUATION = c["fuse"]
        settings.FLOWER_CONTROL_ADDRESS = fed.address
        settings.FLOWER_PKI_DIR = fed.pki.ca_cert.parent
        settings.PORTAL_BASE_URL = here["PORTAL_BASE_URL"]
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from etl.registry import DatasetRegistry
        from portal.accounts.models import Organisation
        from portal.celery import app as celery_app
        from portal.ops.embedded import ensure_redis, stop_redis
        from portal.datasets.services import announce
        from portal.nodes.models import WorkerNode
        from portal.studies import services
        from portal.studies.models import Run, Study, StudyApproval

        ensure_redis(settings.EMBEDDED_REDIS_PORT, settings.VAR_DIR)
        web = None
        try:
            call_command("migrate", verbosity=0)
            call_command("seed_demo", verbosity=0, stdout=open(os.devnull, "w"))
            User = get_user_model()
            coordinator, operator = User.objects.get(username="coordinator"), User.objects.get(username="nodeoperator")
            datasets = []
            for node in tables:
                org, _ = Organisation.objects.get_or_create(code=node.lower(), defaults={"name": node})
                # update_or_create: a second measurement in the same process meets the first's nodes
                wn, _ = WorkerNode.objects.update_or_create(
                    name=node, defaults={"organisation": org, "status": "approved",
                                                 "public_key": "registered by LocalFederation",
                                                 "flower_node_id": fed.node_ids[node]})
                entry = DatasetRegistry(fed.root / "nodes" / node / "data").get("bench")
                datasets.append(announce(wn, None, entry.announcement())[0])
            study = services.create_study(coordinator, {
                "title": "bench", "use_case": "MDS", "endpoint": "os", "model_kind": "deepsurv",
                "hyperparameters": {"local_epochs": 1}, "rounds": rounds, "min_nodes": len(tables),
                "datasets": datasets})
            for ds in datasets:
                StudyApproval.objects.create(study=study, dataset=ds, decision="approved", decided_by=operator,
                                             settings_hash=services.settings_hash(study))  # bound to these settings
            web = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                    "portal.asgi:application"], env=dict(os.environ),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("portal (daphne) did not start")
                time.sleep(0.2)
            with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False,
                              queues=["celery", settings.CONCLUSIONS_QUEUE, settings.GRIDS_QUEUE], shutdown_timeout=30):
                if warmup:
                    first = services.start_run(coordinator, study, 1, comparison=False)
                    deadline = time.monotonic() + 600
                    while first.status in Run.ACTIVE and time.monotonic() < deadline:
                        time.sleep(0.5)
                        first.refresh_from_db()
                    if first.status != "finished":
                        raise RuntimeError(f"the portal's warm-up run ended {first.status}: {first.error[:500]}")
                t0 = time.time()
                run = services.start_run(coordinator, study, rounds, comparison=comparison)
                while True:
                    run.refresh_from_db()
                    if run.status not in Run.ACTIVE:
                        break
                    if time.time() - t0 > 60 * rounds + 600:
                        raise RuntimeError("portal run did not finish in time")
                    time.sleep(0.2)
                total = time.time() - t0
            if run.status != "finished" or not hasattr(run, "model_version"):
                raise RuntimeError(f"portal run ended {run.status}: {run.error[:500]}")
            rts = [m.value for m in run.metrics.filter(node="global", name="round_time_s").order_by("round")]
            slow = {}
            for m in run.metrics.filter(name="train_time_s"):
                slow[m.round] = max(slow.get(m.round, 0.0), m.value)
            overheads = [rt - slow[r] for r, rt in enumerate(rts, start=1)]
            return {"round_time_s": statistics.median(rts), "round_overhead_s": statistics.median(overheads),
                    "round_times_s": [round(x, 3) for x in rts], "run_total_s": total,
                    "model_registered": f"{run.model_version.registered_model_name} v{run.model_version.version}",
                    "config": config}
        finally:
            if web is not None:
                web.terminate()
            stop_redis(settings.VAR_DIR)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--tuning", action="store_true", help="also measure the opt-in flower_tuning")
    p.add_argument("--only", choices=tuple(CONFIGS), nargs="+", help="measure only these")
    p.add_argument("--no-portal", action="store_true", help="skip the measurement through the portal")
    p.add_argument("--portal-config", choices=tuple(k for k in CONFIGS if k != "bare"), default="tuned_fused",
                   help="deployment under the portal measurement (default: the portal's own default, "
                        "tuned_fused = FLOWER_TUNING and FLOWER_FUSED_EVALUATION on)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    fractions = (0.6, 0.3, 0.1) if a.nodes == 3 else tuple([1 / a.nodes] * a.nodes)
    cohort = generate_mds_cohort(a.patients, seed=0)
    cohort = cohort[cohort["age"].notna()].reset_index(drop=True)  # the registry requires age
    parts = split_nodes(cohort, fractions, seed=0)
    tables = {f"H{i + 1}": t for i, t in enumerate(parts)}
    names = a.only or (["bare", "ours", "ours_fused"] + (["tuned", "tuned_fused"] if a.tuning else []))
    root = Path(tempfile.mkdtemp(prefix="fedhaem-bench-"))
    out: dict = {"rounds": a.rounds, "nodes": a.nodes, "patients": a.patients,
                 "cpu_count": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0]}
    try:
        for n in names:
            out[n] = measure(n, tables, a.rounds, root)
            if not a.json:
                print(f"{n:6s} round_time_s {out[n]['round_time_s']:.2f}  round_overhead_s "
                      f"{out[n]['round_overhead_s']:.2f}  run_start_s {out[n]['run_start_s']:.1f}  "
                      f"run_total_s {out[n]['run_total_s']:.1f}  rounds {out[n]['round_times_s']}", flush=True)
        if not a.no_portal:
            try:
                out["portal"] = measure_portal(tables, a.rounds, root, a.portal_config)
            except Exception as err:  # keep the deployments measured so far
                out["portal_error"] = f"{type(err).__name__}: {err}"
                print(f"portal measurement failed: {out['portal_error']}", file=sys.stderr, flush=True)
            if not a.json and "portal" in out:
                print(f"portal ({a.portal_config}) round_time_s {out['portal']['round_time_s']:.2f}  round_overhead_s "
                      f"{out['portal']['round_overhead_s']:.2f}  run_total_s {out['portal']['run_total_s']:.1f}  "
                      f"({out['portal']['model_registered']})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = min((k for k in out if k in CONFIGS and k != "bare"), key=lambda k: out[k]["round_overhead_s"],
               default=None)
    if best:
        out["round_overhead_s"] = out[best]["round_overhead_s"]
        out["round_overhead_config"] = best
    if "bare" in out and "portal" in out:
        out["portal_vs_bare_ratio"] = out["portal"]["run_total_s"] / out["bare"]["run_total_s"]
    if a.json:
        print(json.dumps(out, indent=1))
    elif "portal_vs_bare_ratio" in out:
        print(f"round_overhead_s {out['round_overhead_s']:.2f} ({best}); portal_vs_bare_ratio "
              f"{out['portal_vs_bare_ratio']:.3f} (whole run through the portal / bare flwr run)")


if __name__ == "__main__":
    main()
