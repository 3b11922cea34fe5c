"""How the federation's cost grows with the number of hospitals, on this machine.

    python bench/scale.py [--json] [--nodes 3 10 20 50] [--rounds 3] [--idle-window 30]

For each size in turn: a real federation on 127.0.0.1 (SuperLink + one SuperNode and prefork
launcher per hospital, TLS and SuperNode authentication, fl_engine.deploy.flower_tuning on, as
the portal deploys it), a generated MDS cohort of 200 patients per hospital; then
  idle_cpu_superlink_pct   CPU of the SuperLink and its SuperExec over --idle-window seconds with
                           every node connected and no run, after the nodes' 30 s busy window
  idle_cpu_per_node_pct    the same for one hospital's SuperNode + launcher (mean over nodes)
  rss_per_node_mb          idle resident memory of one hospital's SuperNode + launcher (mean)
  run_start_s              from the run's submission to the ServerApp's first line
  round_overhead_s         median over rounds of the round's wall time minus the slowest node's
                           own training (bench/federation_overhead.py's definition), fused
                           evaluation on
  completed                the run finished with every round
and, with 3 in --nodes, portal_vs_engine_ratio: the same 3-hospital study through the portal
(Celery, run events, comparison phase, MLflow registration) over the engine driven directly
(bench/federation_overhead.py's measure_portal / measure, tuned_fused).
CPU figures are process CPU time from /proc (so other programs on a shared machine inflate them
less than wall-clock figures); the machine's load average is printed beside them.
"""
from __future__ import annotations

import argparse
import importlib.util
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
from fl_engine.deploy import control, flower_tuning  # noqa: E402
from fl_engine.deploy.local import APP_DIR, LocalFederation  # noqa: E402
from fl_engine.deploy.processes import SERVERAPP_POLL_S  # noqa: E402

_spec = importlib.util.spec_from_file_location("federation_overhead", Path(__file__).with_name("federation_overhead.py"))
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree(root: int) -> set[int]:
    """`root` and its descendants."""
    parents = {}
    for p in os.listdir("/proc"):
        if p.isdigit() and (st := _stat(int(p))):
            parents[int(p)] = int(st[1])
    out, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in out and pid not in out:
                out.add(pid)
                grew = True
    return out


def cpu_s(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        if st := _stat(pid):
            total += (int(st[11]) + int(st[12])) / TICK
    return total


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_size(n: int, rounds: int, idle_window: float, root: Path, echo) -> dict:
    cohort = generate_mds_cohort(200 * n, seed=n)
    cohort = cohort[cohort["age"].notna()].reset_index(drop=True)
    tables = {f"H{i + 1:02d}": t for i, t in enumerate(split_nodes(cohort, tuple([1 / n] * n), seed=0))}
    out: dict = {"nodes": n, "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    with LocalFederation(root / f"n{n}", launcher="prefork", poll_interval_s=0.1, tuning=True,
                         superlink_poll_s=SERVERAPP_POLL_S) as fed:
        t0 = time.monotonic()
        for name, table in tables.items():
            fed.add_node(name, table, dataset="bench")
        fed.wait_nodes_online(120 + 10 * n)
        out["nodes_online_s"] = round(time.monotonic() - t0, 1)
        echo(f"{n} nodes online in {out['nodes_online_s']} s")
        time.sleep(flower_tuning.ACTIVE_WINDOW_S + 5)  # past the nodes' busy window
        link = tree(fed.superlink.process.pid)
        nodes = {k: h.process.pid for k, h in fed.nodes.items()}
        launchers = {k: h.launcher.pid for k, h in fed.nodes.items()}
        a_link, a_nodes = cpu_s(link), {k: cpu_s({nodes[k], launchers[k]}) for k in nodes}
        w0 = time.monotonic()
        time.sleep(idle_window)
        dt = time.monotonic() - w0
        out["idle_cpu_superlink_pct"] = round(100 * (cpu_s(link) - a_link) / dt, 2)
        per_node = [100 * (cpu_s({nodes[k], launchers[k]}) - a_nodes[k]) / dt for k in nodes]
        out["idle_cpu_per_node_pct"] = round(statistics.mean(per_node), 2)
        out["idle_cpu_per_node_max_pct"] = round(max(per_node), 2)
        out["rss_per_node_mb"] = round(statistics.mean(rss_mb(nodes[k]) + rss_mb(launchers[k]) for k in nodes), 1)
        out["load_avg_1m_idle"] = round(os.getloadavg()[0], 2)
        echo(f"{n} nodes idle: SuperLink {out['idle_cpu_superlink_pct']}%, per node {out['idle_cpu_per_node_pct']}%, "
             f"{out['rss_per_node_mb']} MB per node")
        metrics = root / f"n{n}-metrics.jsonl"
        t0 = time.time()
        run_id = control.start_run(APP_DIR, {
            "dataset": "bench", "num_rounds": rounds, "min_nodes": n, "local_epochs": 1,
            "poll_interval_s": 0.1, "round_timeout_s": 600.0, "fuse_evaluation": True,
            "metrics_path": str(metrics)}, fed.address, **fed.conn_kwargs())
        try:
            status = fed.wait_run(run_id, 120 * rounds + 600, poll_s=0.5)
            out["completed"] = status["status"] == "finished:completed"
        except TimeoutError as err:
            out["completed"], out["error"] = False, str(err)
        total = time.time() - t0
    if out["completed"]:
        s = overhead.summarise(metrics, t0, total)
        out.update(run_start_s=round(s["run_start_s"], 2), round_overhead_s=round(s["round_overhead_s"], 2),
                   round_time_s=round(s["round_time_s"], 2), run_total_s=round(total, 1))
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[3, 10, 20, 50])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle-window", type=float, default=30.0)
    p.add_argument("--no-portal", action="store_true", help="skip portal_vs_engine_ratio at 3 nodes")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if any(n < 1 for n in a.nodes):
        p.error("--nodes: every size must be at least 1")
    echo = (lambda s: print(s, file=sys.stderr, flush=True)) if a.json else (lambda s: print(s, flush=True))
    root = Path(tempfile.mkdtemp(prefix="fedhaem-scale-"))
    out: dict = {"cpu_count": os.cpu_count(), "rounds": a.rounds, "sizes": []}
    try:
        for n in a.nodes:
            try:
                out["sizes"].append(measure_size(n, a.rounds, a.idle_window, root, echo))
            except Exception as err:  # keep the sizes measured so far
                out["sizes"].append({"nodes": n, "completed": False, "error": f"{type(err).__name__}: {err}"})
            echo(json.dumps(out["sizes"][-1]))
        if 3 in a.nodes and not a.no_portal:
            cohort = generate_mds_cohort(1000, seed=0)
            cohort = cohort[cohort["age"].notna()].reset_index(drop=True)
            tables = {f"H{i + 1}": t for i, t in enumerate(split_nodes(cohort, (0.6, 0.3, 0.1), seed=0))}
            engine = overhead.measure("tuned_fused", tables, a.rounds, root)
            portal = overhead.measure_portal(tables, a.rounds, root, "tuned_fused")
            out["portal_vs_engine_ratio"] = round(portal["run_total_s"] / engine["run_total_s"], 3)
            out["engine_run_total_s"] = round(engine["run_total_s"], 1)
            out["portal_run_total_s"] = round(portal["run_total_s"], 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1) if a.json else "\n".join(json.dumps(s) for s in out["sizes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
