"""How the federation's cost grows with the number of hospitals, on this machine.

    python bench/scale.py [--json] [--nodes 3 10 20 50] [--rounds 3] [--idle-window 30]
                          [--serverapp-launcher stock|prefork|both] [--repeat 1]
                          [--no-shared-warm] [--no-claims-in-node]

For each size in turn: a real federation on 127.0.0.1 (SuperLink + one SuperNode per hospital,
TLS and SuperNode authentication, fl_engine.deploy.flower_tuning on, as the portal deploys it),
a generated MDS cohort of 200 patients per hospital. By default in the configuration of a box
that hosts many nodes: the SuperLink starts ServerApps through the prefork launcher
(fl_engine.deploy.serverapp_prefork), one warm process forks every node's ClientApps
(--shared-warm) and each SuperNode claims its own tasks (--claims-in-node); --no-claims-in-node
gives every node a lean prefork launcher process, --no-shared-warm a launcher that warms itself,
--serverapp-launcher stock Flower's SuperExec. Then
  idle_cpu_superlink_pct   CPU of the SuperLink and its SuperExec over --idle-window seconds with
                           every node connected and no run, after the nodes' 30 s busy window
  idle_cpu_per_node_pct    the same for one hospital's processes (mean over nodes): its SuperNode,
                           its launcher if it has one, and an n-th of the box's warm process
  rss_per_node_mb          idle resident memory of the same (mean)
  run_start_s              from the run's submission to the start of its first training round
                           (serverapp_start_s: to the ServerApp's first line; the rest is the
                           preprocessing phase; `timeline` has every step)
  round_overhead_s         median over rounds of the round's wall time minus the slowest node's
                           own training (bench/federation_overhead.py's definition), fused
                           evaluation on
  warm_run                 the same run again right after the first, every launcher warm:
                           its run_start_s, round_overhead_s and round times (the first run's
                           rounds also carry n cold launchers' torch imports on this box's cores)
  completed                the run finished with every round (a size whose busy nodes would not
                           fit in the available memory, by the private memory per busy node
                           measured at the smaller size before it, is not run: `not_run` says why)
  run_cpu_superlink_s, run_cpu_per_node_s
                           CPU seconds the run cost the manager (SuperLink, SuperExec, ServerApp)
                           and each node (SuperNode, launcher, its ClientApp children)
  node_cpu_beyond_training_s_per_round, one_box_bound_s_per_round
                           a node's CPU per round beyond its training, over the rounds after the
                           first (warm launchers: no start-up cost in them), and n times that over
                           the machine's cores: what the round overhead cannot go below on one box
  private_mb_per_idle_node / private_mb_per_busy_node
                           memory only that node's processes hold (shared library pages aside),
                           idle and right after the run
  rss_superlink_mb         idle resident memory of the SuperLink and its ServerApp launcher
                           (Flower's SuperExec, or fl_engine.deploy.serverapp_prefork's supervisor
                           and warm worker: --serverapp-launcher)
With --serverapp-launcher both, each size is measured with Flower's SuperExec ("stock") and with
the prefork ServerApp launcher, alternating (stock, prefork, then prefork, stock ...) --repeat
times, in this one invocation: the A/B of run_start_s and serverapp_start_s on a shared machine.
and, with 3 in --nodes, portal_vs_engine_ratio: the same 3-hospital study through the portal
(Celery, run events, MLflow registration) over the engine driven directly
(bench/federation_overhead.py's measure_portal / measure, tuned_fused), both without the
comparison phase (switched off per run); portal_vs_engine_ratio_with_comparison and the run
totals with it give that phase's cost apart. Each side first runs one unmeasured one-round run
on its fresh federation (and, for the portal, in its fresh Celery worker): the ratio is what a
portal that has run before adds, not the first import of MLflow in a new process.
CPU figures are process CPU time from /proc (so other programs on a shared machine inflate them
less than wall-clock figures); the machine's load average is printed beside them.
With --shared-warm (default), one warm process per box forks every node's ClientApps
(fl_engine.deploy.zygote, LocalFederation(shared_warm=True)); its CPU and memory are counted to
the nodes, an n-th each (rss_zygote_mb: its own; forks_before_torch: the run's children it forked
before importing torch, lean as it starts: the stats children, n at most). With --claims-in-node
(default with --shared-warm), each SuperNode claims its own tasks (no launcher process: a node is
the SuperNode and its share of the warm process); --no-claims-in-node, a lean launcher per node.
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
import threading
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


def cpu_s(pids: set[int], children: bool = False) -> float:
    """CPU seconds (user + system) of `pids`; with `children`, also of their exited and reaped
    children (a launcher's forked ClientApps, a SuperExec's ServerApps)."""
    total = 0.0
    for pid in pids:
        if st := _stat(pid):
            total += (int(st[11]) + int(st[12]) + ((int(st[13]) + int(st[14])) if children else 0)) / TICK
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


def private_mb(pid: int) -> float:
    """Memory only this process holds (private clean + dirty pages, smaps_rollup): what one more
    such process costs the machine; shared library pages are counted once by the kernel."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total / 1024


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timeline(metrics: Path, t0: float) -> dict:
    """Seconds from submission to each step of the run, from its metrics file: the ServerApp's
    first line, the end of preprocessing (first_round_start_s: the run's "training" event, sent
    as round 1's training requests go out), each phase's last record (round, baseline,
    comparison) and the "finished" event; `after_rounds_s` is what the run spent after its last
    training round (the baseline and the comparison phase). Figures before 2026-12-06 03:30 UTC
    took round 1's record time minus its round time, which with fused evaluation also counted
    round 2's training exchange (round 1's record is written when its evaluation comes back)."""
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    out: dict = {}
    for r in recs:
        if r.get("type") == "phase" and r.get("phase") == "training" and "first_round_start_s" not in out:
            # the end of preprocessing: round 1's training request goes out now
            out["first_round_start_s"] = round(r["time"] - t0, 2)
            continue
        key = r.get("phase", "round") if "round" in r else r.get("type", "?")
        out[f"{key}_s"] = round(r["time"] - t0, 2)  # the last record of each kind
        if "round" in r and r.get("phase", "round") == "round" and "first_round_s" not in out:
            out["first_round_s"] = round(r["time"] - t0, 2)
    if "round_s" in out:
        out["after_rounds_s"] = round(max(v for v in out.values()) - out["round_s"], 2)
    return out


def wait_finished(fed, run_id: str, timeout_s: float, poll_s: float = 0.5) -> str:
    """The run's final status. Asked in this process (control.list_runs, in_process): a `flwr ls`
    CLI per poll costs ~1.5 s of CPU, so polling through it kept a core of this 2-core box busy
    during every measured run (the figures before 2026-12-05 08:50 UTC carry that load), and at 50
    nodes it did not answer within its 60 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rec = next((r for r in control.list_runs(fed.address, **fed.conn_kwargs())
                        if str(r.get("run-id")) == str(run_id)), None)
        except control.ControlError:
            rec = None  # the SuperLink busy: ask again
        status = str((rec or {}).get("status", ""))
        if status.startswith("finished"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status or 'unknown'} after {timeout_s:g} s")
        time.sleep(poll_s)


def measure_size(n: int, rounds: int, idle_window: float, root: Path, echo, warm_mb: float | None = None,
                 serverapp_launcher: str = "stock", warm_run: bool = True, shared_warm: bool = False,
                 claims_in_node: bool = False) -> dict:
    """One size. `warm_mb`: private memory of one busy node (SuperNode + warmed launcher) measured
    at a smaller size; when n of them would not fit in the memory available after the idle
    measurement, the run is not started (the machine would swap or kill processes) and the
    result says so with the figures."""
    cohort = generate_mds_cohort(200 * n, seed=n)
    cohort = cohort[cohort["age"].notna()].reset_index(drop=True)
    tables = {f"H{i + 1:02d}": t for i, t in enumerate(split_nodes(cohort, tuple([1 / n] * n), seed=0))}
    out: dict = {"nodes": n, "serverapp_launcher": serverapp_launcher, "shared_warm": shared_warm,
                 "claims_in_node": claims_in_node,
                 "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    shutil.rmtree(root / f"n{n}", ignore_errors=True)  # a repeated size starts afresh
    with LocalFederation(root / f"n{n}", launcher="prefork", poll_interval_s=0.1, tuning=True,
                         superlink_poll_s=SERVERAPP_POLL_S,
                         serverapp_launcher="flower" if serverapp_launcher == "stock" else "prefork",
                         shared_warm=shared_warm, claims_in_node=claims_in_node) as fed:
        t0 = time.monotonic()
        for name, table in tables.items():
            fed.add_node(name, table, dataset="bench")
        fed.wait_nodes_online(120 + 10 * n)
        out["nodes_online_s"] = round(time.monotonic() - t0, 1)
        echo(f"{n} nodes online in {out['nodes_online_s']} s")
        time.sleep(flower_tuning.ACTIVE_WINDOW_S + 5)  # past the nodes' busy window
        link = tree(fed.superlink.process.pid)
        nodes = {k: h.process.pid for k, h in fed.nodes.items()}
        # with --claims-in-node a node has no launcher process: its SuperNode claims its tasks
        launchers = {k: h.launcher.pid for k, h in fed.nodes.items() if h.launcher is not None}
        # with --shared-warm, the box's warm process forks every node's ClientApps: its CPU (its
        # children's included) and memory are the nodes', an n-th to each
        zygote = fed.zygote.pid if fed.zygote is not None else None

        def node_cpu(k: str, children: bool = False) -> float:
            own = cpu_s({nodes[k], *([launchers[k]] if k in launchers else [])}, children=children)
            return own + (cpu_s({zygote}, children=children) / n if zygote else 0.0)

        def node_mb(k: str, measure) -> float:
            return (measure(nodes[k]) + (measure(launchers[k]) if k in launchers else 0.0)
                    + (measure(zygote) / n if zygote else 0.0))

        a_link, a_nodes = cpu_s(link), {k: node_cpu(k) for k in nodes}
        w0 = time.monotonic()
        time.sleep(idle_window)
        dt = time.monotonic() - w0
        out["idle_cpu_superlink_pct"] = round(100 * (cpu_s(link) - a_link) / dt, 2)
        per_node = [100 * (node_cpu(k) - a_nodes[k]) / dt for k in nodes]
        out["idle_cpu_per_node_pct"] = round(statistics.mean(per_node), 2)
        out["idle_cpu_per_node_max_pct"] = round(max(per_node), 2)
        out["rss_per_node_mb"] = round(statistics.mean(node_mb(k, rss_mb) for k in nodes), 1)
        if zygote:
            out["rss_zygote_mb"] = round(rss_mb(zygote), 1)
        out["rss_superlink_mb"] = round(sum(rss_mb(p) for p in tree(fed.superlink.process.pid)), 1)
        out["load_avg_1m_idle"] = round(os.getloadavg()[0], 2)
        echo(f"{n} nodes idle: SuperLink {out['idle_cpu_superlink_pct']}%, per node {out['idle_cpu_per_node_pct']}%, "
             f"{out['rss_per_node_mb']} MB per node")
        out["private_mb_per_idle_node"] = round(statistics.mean(
            node_mb(k, private_mb) for k in nodes), 1)
        if warm_mb is not None:
            # the idle nodes are already in memory: a run adds what a busy node holds beyond them
            more = max(warm_mb - out["private_mb_per_idle_node"], 0.0)
            need, avail = n * more * 1.1, mem_available_mb()
            if need > avail:
                out.update(completed=False, not_run=(
                    f"a run warms every node's launcher (torch and the ClientApp, {warm_mb:.0f} MB private per "
                    f"busy node, measured at a smaller size or given by --busy-node-mb, {more:.0f} MB more than "
                    f"idle): {n} nodes need ~{need / 1024:.1f} GB more, {avail / 1024:.1f} GB is available"))
                echo(f"{n} nodes: run not started: {out['not_run']}")
                return out
        metrics = root / f"n{n}-{serverapp_launcher}-{time.monotonic_ns()}-metrics.jsonl"
        c_link = cpu_s(tree(fed.superlink.process.pid), children=True)
        c_nodes = {k: node_cpu(k, children=True) for k in nodes}
        # node CPU when the first round's record appears: the rounds after it cost the rest
        after_first: dict = {}

        def watch_first_round() -> None:
            deadline = time.monotonic() + 120 * rounds + 600
            while time.monotonic() < deadline:
                if metrics.exists() and any('"round": 1' in line for line in metrics.read_text().splitlines()):
                    after_first.update({k: node_cpu(k, children=True) for k in nodes})
                    after_first["_train"] = sum(
                        m["value"] for line in metrics.read_text().splitlines() if line.strip()
                        for m in json.loads(line).get("metrics", []) if m["name"] == "train_time_s")
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_first_round, daemon=True)
        watcher.start()
        t0 = time.time()
        def run_config(path: Path) -> dict:
            return {"dataset": "bench", "num_rounds": rounds, "min_nodes": n, "local_epochs": 1,
                    "poll_interval_s": 0.1, "round_timeout_s": 600.0, "fuse_evaluation": True,
                    # the comparison is its own phase, measured apart (portal_vs_engine_ratio_with_comparison)
                    "comparison": False, "metrics_path": str(path)}

        run_id = control.start_run(APP_DIR, run_config(metrics), fed.address, **fed.conn_kwargs())
        try:
            status = wait_finished(fed, run_id, 120 * rounds + 600)
            out["completed"] = status == "finished:completed"
            if not out["completed"]:  # Flower's status and its words: what ended the run
                out["status"] = status
                rec = next((r for r in control.list_runs(fed.address, **fed.conn_kwargs())
                            if str(r.get("run-id")) == str(run_id)), {})
                out["error"] = str(rec.get("status-details") or "")[:500]
        except TimeoutError as err:
            out["completed"], out["error"] = False, str(err)
        total = time.time() - t0
        time.sleep(1.0)  # the last children exit and are reaped
        out["run_cpu_superlink_s"] = round(cpu_s(tree(fed.superlink.process.pid), children=True) - c_link, 1)
        end_cpu = {k: node_cpu(k, children=True) for k in nodes}
        out["run_cpu_per_node_s"] = round(statistics.mean(end_cpu[k] - c_nodes[k] for k in nodes), 2)
        if after_first and rounds > 1:  # the later rounds: warm launchers, no start-up in them
            out["later_rounds_cpu_per_node_s"] = round(statistics.mean(end_cpu[k] - after_first[k] for k in nodes), 2)
        # right after the run every launcher is warm (it sheds that memory after --release-after)
        out["private_mb_per_busy_node"] = round(statistics.mean(
            node_mb(k, private_mb) for k in nodes), 1)
        if fed.zygote is not None and "torch loaded in" in (zlog := fed.zygote.log_text()):
            # the lean warm process: children it forked before it had torch (a run's n stats
            # children at most; a training child forked before it imports torch itself)
            out["forks_before_torch"] = zlog.split("torch loaded in", 1)[0].count(" -> child ")
        if out["completed"] and warm_run:
            # the same run again at once: every launcher warm (a network running studies back to
            # back); the first run's rounds also carry each cold launcher's torch import, n of
            # them sharing this machine's cores
            warm_metrics = metrics.with_name(metrics.name.replace("-metrics", "-warm-metrics"))
            t1 = time.time()
            again = control.start_run(APP_DIR, run_config(warm_metrics), fed.address, **fed.conn_kwargs())
            try:
                if wait_finished(fed, again, 120 * rounds + 600) == "finished:completed":
                    w = overhead.summarise(warm_metrics, t1, time.time() - t1)
                    out["warm_run"] = {"run_start_s": timeline(warm_metrics, t1)["first_round_start_s"],
                                       "round_overhead_s": round(w["round_overhead_s"], 2),
                                       "round_times_s": w["round_times_s"],
                                       "run_total_s": round(w["run_total_s"], 1)}
                else:
                    out["warm_run"] = {"completed": False}
            except TimeoutError as err:
                out["warm_run"] = {"completed": False, "error": str(err)}
    if out["completed"]:
        s = overhead.summarise(metrics, t0, total)
        tl = timeline(metrics, t0)
        train = [m["value"] for line in metrics.read_text().splitlines() if line.strip()
                 for m in json.loads(line).get("metrics", []) if m["name"] == "train_time_s"]
        # What every node spends on a run beyond its own training (Flower's message handling,
        # the ClientApp's start, loading and checks, evaluation, the stats phase), and what that
        # costs in wall time when all n nodes share this machine's cores: the bound of the
        # round overhead on one box.
        out["node_train_s_per_run"] = round(sum(train) / n, 2)
        if "later_rounds_cpu_per_node_s" in out:
            later_train = (sum(train) - after_first["_train"]) / n
            out["node_cpu_beyond_training_s_per_round"] = round(
                (out["later_rounds_cpu_per_node_s"] - later_train) / (rounds - 1), 2)
            out["one_box_bound_s_per_round"] = round(
                n * out["node_cpu_beyond_training_s_per_round"] / (os.cpu_count() or 1), 2)
        out.update(run_start_s=tl["first_round_start_s"], serverapp_start_s=round(s["run_start_s"], 2),
                   round_overhead_s=round(s["round_overhead_s"], 2), round_time_s=round(s["round_time_s"], 2),
                   run_total_s=round(total, 1), timeline=tl)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[3, 10, 20, 50])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle-window", type=float, default=30.0)
    p.add_argument("--no-portal", action="store_true", help="skip portal_vs_engine_ratio at 3 nodes")
    p.add_argument("--no-warm-run", action="store_true", help="skip the second run on the warm federation")
    p.add_argument("--busy-node-mb", type=float, default=351.0,
                   help="private memory of one busy node assumed before any size has been measured "
                        "(351 MB: SuperNode + warmed launcher, measured here on 2026-12-05); guards "
                        "the first size against running the machine out of memory")
    p.add_argument("--serverapp-launcher", choices=("stock", "prefork", "both"), default="prefork",
                   help="how the SuperLink launches ServerApps: Flower's SuperExec (stock), FedHaem's "
                        "warm launcher (prefork), or both alternating (A/B)")
    p.add_argument("--repeat", type=int, default=1, help="with --serverapp-launcher both: pairs per size")
    p.add_argument("--shared-warm", action=argparse.BooleanOptionalAction, default=True,
                   help="one warm process forks every node's ClientApps (fl_engine.deploy.zygote); its CPU "
                        "and memory are counted to the nodes, an n-th each (default: on)")
    p.add_argument("--claims-in-node", action=argparse.BooleanOptionalAction, default=None,
                   help="with --shared-warm: each SuperNode claims its tasks itself, no launcher process "
                        "(prefork.serve_in_supernode); default: on with --shared-warm")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if any(n < 1 for n in a.nodes):
        p.error("--nodes: every size must be at least 1")
    if a.claims_in_node is None:
        a.claims_in_node = a.shared_warm
    if a.claims_in_node and not a.shared_warm:
        p.error("--claims-in-node needs --shared-warm (the box's warm process forks the tasks)")
    echo = (lambda s: print(s, file=sys.stderr, flush=True)) if a.json else (lambda s: print(s, flush=True))
    root = Path(tempfile.mkdtemp(prefix="fedhaem-scale-"))
    out: dict = {"cpu_count": os.cpu_count(), "rounds": a.rounds, "sizes": []}
    try:
        warm_mb = a.busy_node_mb
        if a.serverapp_launcher == "both":  # alternate the order: neither side always goes first
            order = [x for i in range(max(1, a.repeat)) for x in
                     (("stock", "prefork") if i % 2 == 0 else ("prefork", "stock"))]
        else:
            order = [a.serverapp_launcher]
        for n in sorted(a.nodes):
            for which in order:
                try:
                    out["sizes"].append(measure_size(n, a.rounds, a.idle_window, root, echo, warm_mb, which,
                                                     warm_run=not a.no_warm_run, shared_warm=a.shared_warm,
                                                     claims_in_node=a.claims_in_node))
                    warm_mb = out["sizes"][-1].get("private_mb_per_busy_node", warm_mb)
                except Exception as err:  # keep the sizes measured so far
                    out["sizes"].append({"nodes": n, "serverapp_launcher": which, "completed": False,
                                         "error": f"{type(err).__name__}: {err}"})
                echo(json.dumps(out["sizes"][-1]))
        if 3 in a.nodes and not a.no_portal:
            cohort = generate_mds_cohort(1000, seed=0)
            cohort = cohort[cohort["age"].notna()].reset_index(drop=True)
            tables = {f"H{i + 1}": t for i, t in enumerate(split_nodes(cohort, (0.6, 0.3, 0.1), seed=0))}
            # Without the comparison phase (a per-run switch), then with it: the ratio is the first;
            # the phase's own cost is reported apart.
            for label, comparison in (("", False), ("_with_comparison", True)):
                (root / f"e{label}").mkdir(parents=True, exist_ok=True)
                (root / f"p{label}").mkdir(parents=True, exist_ok=True)
                engine = overhead.measure("tuned_fused", tables, a.rounds, root / f"e{label}", comparison=comparison,
                                          warmup=True)
                portal = overhead.measure_portal(tables, a.rounds, root / f"p{label}", "tuned_fused",
                                                 comparison=comparison, warmup=True)
                out[f"portal_vs_engine_ratio{label}"] = round(portal["run_total_s"] / engine["run_total_s"], 3)
                out[f"engine_run_total_s{label}"] = round(engine["run_total_s"], 1)
                out[f"portal_run_total_s{label}"] = round(portal["run_total_s"], 1)
                echo(f"portal vs engine{label or ' (no comparison phase)'}: {portal['run_total_s']:.1f} s / "
                     f"{engine['run_total_s']:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1) if a.json else "\n".join(json.dumps(s) for s in out["sizes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
