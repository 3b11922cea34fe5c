"""Fault injection against a real demo federation (issue 13, "How we will know").

Starts `manage.py demo` in a fresh temporary var folder on free loopback ports, drives runs of the
demo study through the API and, at random points of a run (seeded), injects each fault
`--repeat` times:

  node      SIGKILL one worker node's process tree (`fedhaem-node start` and its SuperNode)
  worker    SIGKILL the Celery worker of the short tasks (start, reconciler)
  concluder SIGKILL the Celery worker of the conclusions (model registration)
  redis     SIGKILL the embedded redis-server (the supervisor restarts it)
  superlink SIGKILL the SuperLink (the supervisor restarts it)
  portal    SIGKILL daphne (the supervisor restarts it)
  load      5 studies' runs at once on the embedded SQLite under a CPU hog (busy loops)

A fault "clears" when the killed service is back (port open / new process alive); for `load`
when the hog stops (it lasts `--hog-seconds` or until every run is terminal). Each run must then
reach a terminal state within `--stranded-after` seconds (120): finished, or failed with a
reason that names the fault. Prints one JSON object (`--json`) or a readable summary.

    .venv/bin/python bench/faults.py --json --repeat 2

Traffic goes to 127.0.0.1 only; the demo is always stopped (SIGTERM to its process group, then
SIGKILL) on the way out.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAULTS = ("node", "worker", "concluder", "redis", "superlink", "portal", "load")
TERMINAL = {"finished", "failed", "cancelled"}
# Words a failure reason may use to name each fault; any other failure is "unexplained".
FAULT_WORDS = {
    "node": ("node", "hosp-", "unreachable", "supernode", "participant"),
    "worker": ("worker", "task", "celery", "lost"),
    "concluder": ("worker", "task", "celery", "lost", "conclu", "stored"),
    "redis": ("redis", "broker"),
    "superlink": ("superlink", "flower", "serverapp", "not know", "unknown"),
    "portal": ("portal", "event"),
    "load": ("time limit", "timeout", "timed out", "locked", "busy"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- processes (Linux /proc) --------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of `pid`, None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and st[0] == pid and st[1] != "Z":
                out.append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (sessions of their own included: they keep the parent pid)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if alive(p):
            found.append(p)
            todo.extend(children(p))
    return found


def service_pid(demo_pid: int, needle: str) -> int | None:
    for p in children(demo_pid):
        if needle in cmdline(p):
            return p
    return None


# --- the demo ---------------------------------------------------------------------------------

class Demo:
    """A `manage.py demo` in its own var folder and free loopback ports (`extra_env` on top);
    `stop()` always leaves nothing behind (SIGTERM to its process group, then SIGKILL). The
    security probe starts its demo with this class too."""

    def __init__(self, var: Path, extra_env: dict | None = None):
        self.var = var
        self.port, self.link = free_port(), free_port()
        self.redis_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "OIDC_ISSUER")}
        self.env.update({
            "FEDHAEM_VAR_DIR": str(var), "EMBEDDED_REDIS_PORT": str(self.redis_port),
            "DEV_IDP_PORT": str(free_port()), "FLOWER_CONTROL_ADDRESS": f"127.0.0.1:{self.link}",
            "FLOWER_FLEET_ADDRESS": f"127.0.0.1:{self.link}", "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        })
        self.out = var.parent / "demo.out"
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = self.admin_token = ""

    def start(self, timeout: float = 400) -> None:
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                # A free port picked at __init__ was taken by another program meanwhile: the demo
                # says so and exits; stop what it started and try again on new ports.
                if "address already in use" not in str(exc).lower() or attempt == 2:
                    raise
                self.stop()
                self._new_ports()

    def _new_ports(self) -> None:
        self.port, self.link, self.redis_port = free_port(), free_port(), free_port()
        self.env.update({"EMBEDDED_REDIS_PORT": str(self.redis_port), "DEV_IDP_PORT": str(free_port()),
                         "FLOWER_CONTROL_ADDRESS": f"127.0.0.1:{self.link}",
                         "FLOWER_FLEET_ADDRESS": f"127.0.0.1:{self.link}"})
        self.base = f"http://127.0.0.1:{self.port}"

    def _start(self, timeout: float) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(self.port)], cwd=REPO,
                                     env=self.env, stdout=open(self.out, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "FedHaem is running" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("demo did not start:\n" + self.log()[-3000:])
            time.sleep(1)
        self.token = self.manage("api_token", "coordinator")
        self.admin_token = self.manage("api_token", "admin")
        self.wait_healthy(timeout=max(30.0, deadline - time.monotonic()))

    def log(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def manage(self, *args: str, timeout: float = 120) -> str:
        r = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)}: {r.stderr[-2000:]}")
        return r.stdout.strip()

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None,
            timeout: float = 15) -> tuple[int, dict]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Token {token or self.token}",
                                              "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"{}")
            except ValueError:
                return e.code, {}
        except (OSError, ValueError):
            return 0, {}

    def health(self) -> dict:
        status, body = self.api("GET", "/api/health/", token=self.admin_token, timeout=10)
        return {"http": status, **body}

    def wait_healthy(self, timeout: float = 120) -> bool:
        """Health 200 and the three worker nodes online, or False at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h.get("http") == 200 and h.get("nodes", {}).get("online", 0) >= 3:
                return True
            time.sleep(2)
        return False

    def pid(self, needle: str) -> int | None:
        return service_pid(self.proc.pid, needle) if self.proc else None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- studies and runs ---

    def demo_study(self) -> int:
        _, body = self.api("GET", "/api/studies/")
        rows = body.get("results", body) if isinstance(body, dict) else body
        for s in rows:
            if s.get("title", "").startswith("Demo: MDS"):
                return s["id"]
        raise RuntimeError(f"no demo study in {rows!r}")

    def extra_studies(self, n: int) -> list[int]:
        """`n` more ready, approved copies of the demo study (made in the demo's database)."""
        code = (
            "from django.contrib.auth import get_user_model\n"
            "from portal.studies.models import Study\n"
            "from portal.studies import services\n"
            "from portal.ops import federation_demo as fd\n"
            "src = Study.objects.get(title=fd.STUDY_TITLE)\n"
            "coord = get_user_model().objects.get(username='coordinator')\n"
            "op = get_user_model().objects.get(username='nodeoperator')\n"
            "ids = []\n"
            f"for k in range({n}):\n"
            "    t = f'Faults bench copy {k + 1}'\n"
            "    s = Study.objects.filter(title=t).first()\n"
            "    if s is None:\n"
            "        s = services.clone_study(coord, src)\n"
            "        s.title = t; s.status = Study.Status.READY; s.save()\n"
            "    for ds in s.datasets.all():\n"
            "        fd._approve_for_demo(s, ds, op)\n"
            "    ids.append(s.pk)\n"
            "print(','.join(map(str, ids)))\n")
        out = self.manage("shell", "-c", code)
        return [int(x) for x in out.strip().splitlines()[-1].split(",")]

    def start_run(self, study: int, rounds: int, deadline_s: float = 60) -> int:
        deadline = time.monotonic() + deadline_s
        while True:
            status, body = self.api("POST", f"/api/studies/{study}/runs/", {"rounds": rounds})
            if status in (200, 201) and "id" in body:
                return body["id"]
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not start a run of study {study}: {status} {body}")
            time.sleep(2)

    def run(self, run_id: int) -> dict:
        status, body = self.api("GET", f"/api/runs/{run_id}/")
        return body if status == 200 else {}


# --- faults ---------------------------------------------------------------------------------

def _kill_tree(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def inject(demo: Demo, fault: str, rng: random.Random) -> tuple[dict, callable]:
    """Kill what `fault` names; returns (what was killed, a check that it is back)."""
    if fault == "node":
        name = rng.choice(["hosp-a", "hosp-b", "hosp-c"])
        agent = demo.pid(f"--name {name}")
        if agent is None:
            raise RuntimeError(f"node {name} not running")
        victims = tree(agent)
        _kill_tree(victims)

        def back() -> bool:
            new = demo.pid(f"--name {name}")
            return new is not None and new != agent and any("supernode" in cmdline(p) for p in tree(new))
        return {"node": name, "pids": victims}, back
    needle, port = {"worker": ("celery -A portal worker -Q celery", None),
                    "concluder": ("celery -A portal worker -Q conclusions", None), "redis": ("redis-server", demo.redis_port),
                    "superlink": ("superlink --ssl-ca-certfile", demo.link),  # stock or tuned entry
                    "portal": ("portal.asgi:application", demo.port)}[fault]
    old = demo.pid(needle)
    if old is None:
        raise RuntimeError(f"{fault} not running")
    os.kill(old, signal.SIGKILL)
    gone_at = time.monotonic()

    def back() -> bool:
        new = demo.pid(needle)
        if new is None or new == old:
            return False
        # a port freed by SIGKILL may still answer for an instant: judge it only a moment later
        return port is None or (time.monotonic() - gone_at > 0.5 and port_open(port))
    return {"pid": old}, back


def _busy() -> None:
    while True:
        pass


def wait_terminal(demo: Demo, runs: list[int], since: float, stranded_after: float,
                  poll: float = 2.0) -> dict[int, dict]:
    """Poll until every run is terminal or `stranded_after` s past `since`; {run: last view + t}."""
    seen: dict[int, dict] = {}
    while True:
        for r in runs:
            if r in seen and seen[r].get("status") in TERMINAL:
                continue
            view = demo.run(r)
            if view:
                view["_t"] = time.monotonic() - since
                seen[r] = view
        if all(seen.get(r, {}).get("status") in TERMINAL for r in runs):
            return seen
        if time.monotonic() - since > stranded_after:
            return seen
        time.sleep(poll)


def judge(views: dict[int, dict], runs: list[int], fault: str) -> dict:
    out = {"runs": len(runs), "stranded": 0, "lost_metrics": 0, "lost_models": 0, "seconds_to_terminal": [],
           "failed_reasons": [], "unexplained_failures": 0, "statuses": {}}
    for r in runs:
        v = views.get(r, {})
        status = v.get("status", "unknown")
        out["statuses"][str(r)] = status
        if status not in TERMINAL:
            out["stranded"] += 1
            continue
        out["seconds_to_terminal"].append(round(max(0.0, v["_t"]), 1))
        if status == "failed" or status == "cancelled":
            reason = v.get("error") or ""
            out["failed_reasons"].append(f"run {r} {status}: {reason}")
            if not any(w in reason.lower() for w in FAULT_WORDS[fault]):
                out["unexplained_failures"] += 1
            continue
        got = {m["round"] for m in v.get("metrics", []) if m.get("node") == "global" and m.get("name") == "c_index"}
        missing = [k for k in range(1, int(v.get("rounds") or 0) + 1) if k not in got]
        if missing:
            out["lost_metrics"] += 1
            out.setdefault("missing_rounds", {})[str(r)] = missing
        if not v.get("model_version"):
            out["lost_models"] += 1
    return out


def cancel_leftovers(demo: Demo, views: dict[int, dict], runs: list[int]) -> None:
    for r in runs:
        if views.get(r, {}).get("status") not in TERMINAL:
            demo.api("POST", f"/api/runs/{r}/cancel/")


def baseline(demo: Demo, study: int, rounds: int, stranded_after: float) -> tuple[float, dict]:
    """Two undisturbed runs; the second one's duration sets the window in which faults land (the
    first pays the nodes' cold start: lean launchers import torch for it, so it runs ~2x longer
    and faults timed by it landed after later runs had finished)."""
    runs, duration, views = [], 0.0, {}
    for _ in range(2):
        t0 = time.monotonic()
        run = demo.start_run(study, rounds)
        runs.append(run)
        views.update(wait_terminal(demo, [run], t0, stranded_after + 300))
        cancel_leftovers(demo, views, [run])
        duration = time.monotonic() - t0
    return duration, judge(views, runs, "load")


def one_fault(demo: Demo, fault: str, rng: random.Random, study: int, extra: list[int], rounds: int,
              window: float, stranded_after: float, hog_seconds: float, hogs: int) -> dict:
    record: dict = {"fault": fault}
    if not demo.wait_healthy(timeout=120):
        record["note"] = "demo not healthy before the fault (continued anyway)"
    if fault == "load":
        procs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(hogs)]
        for p in procs:
            p.start()
        try:
            runs = [demo.start_run(s, rounds) for s in [study, *extra]]
            hog_end = time.monotonic() + hog_seconds
            while time.monotonic() < hog_end:
                if all(demo.run(r).get("status") in TERMINAL for r in runs):
                    break
                time.sleep(2)
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.join(5)
        cleared = time.monotonic()
        record.update(hogs=hogs, hog_s=round(cleared - (hog_end - hog_seconds), 1))
    else:
        run = demo.start_run(study, rounds)
        runs = [run]
        started = time.monotonic()
        delay = rng.uniform(0.1, 0.9) * window
        while time.monotonic() - started < delay:
            time.sleep(0.2)
        if fault == "concluder":  # the conclusion is what this worker does: kill it in the middle of one
            until = time.monotonic() + 3 * window
            while demo.run(run).get("status") not in ("concluding", *TERMINAL) and time.monotonic() < until:
                time.sleep(0.2)
        before = demo.run(run).get("status", "unknown")
        killed, back = inject(demo, fault, rng)
        killed_at = time.monotonic()
        record.update(at_s=round(killed_at - started, 1), status_at_fault=before, killed=killed)
        deadline = killed_at + 90
        while not back():
            if time.monotonic() > deadline:
                record["note"] = "service not back within 90 s"
                break
            time.sleep(0.2)
        cleared = time.monotonic()
        record["back_after_s"] = round(cleared - killed_at, 1)
    views = wait_terminal(demo, runs, cleared, stranded_after)
    record.update(judge(views, runs, fault))
    cancel_leftovers(demo, views, runs)
    if record["stranded"]:
        wait_terminal(demo, runs, time.monotonic(), 60)
    return record


def bench(args, echo=lambda s: None) -> dict:
    rng = random.Random(args.seed)
    faults = [f for f in args.faults.split(",") if f]
    tmp = Path(tempfile.mkdtemp(prefix="fedhaem-faults-"))
    # five studies at once: none waits behind another in the load case
    demo = Demo(tmp / "var", {"MAX_ACTIVE_RUNS": "5", "RECONCILE_EVERY_S": "5"})
    result: dict = {"faults_tried": 0, "runs": 0, "stranded": 0, "lost_metrics": 0, "lost_models": 0,
                    "unexplained_failures": 0, "landed_after_end": 0, "seconds_to_terminal": {}, "failed_reasons": {},
                    "per_fault": {},
                    "seed": args.seed, "rounds": args.rounds}
    try:
        t0 = time.monotonic()
        demo.start()
        result["demo_start_s"] = round(time.monotonic() - t0, 1)
        echo(f"demo up in {result['demo_start_s']} s at {demo.base} (var {demo.var})")
        study = demo.demo_study()
        extra = demo.extra_studies(args.studies - 1) if "load" in faults else []
        if args.window:
            duration, base = args.window, judge({}, [], "load")
        else:
            duration, base = baseline(demo, study, args.rounds, args.stranded_after)
            result["baseline"] = {"run_s": round(duration, 1), **base}
            echo(f"baseline run {duration:.1f} s: {base['statuses']}")
        window = max(5.0, duration)
        plan = [f for f in faults for _ in range(args.repeat)]
        rng.shuffle(plan)
        for k, fault in enumerate(plan, 1):
            try:
                rec = one_fault(demo, fault, rng, study, extra, args.rounds, window, args.stranded_after,
                                args.hog_seconds, args.hogs)
            except Exception as exc:  # a fault we could not inject is reported, not fatal
                rec = {"fault": fault, "error": f"{type(exc).__name__}: {exc}", "runs": 0, "stranded": 0,
                       "lost_metrics": 0, "lost_models": 0, "unexplained_failures": 0,
                       "seconds_to_terminal": [], "failed_reasons": []}
            echo(f"[{k}/{len(plan)}] {fault}: {json.dumps({x: rec.get(x) for x in ('at_s', 'status_at_fault', 'back_after_s', 'statuses', 'seconds_to_terminal', 'failed_reasons', 'error', 'note')})}")
            result["faults_tried"] += 0 if "error" in rec else 1
            # a fault that landed on a run already ended tested only the recovery of the service
            result["landed_after_end"] += rec.get("status_at_fault") in TERMINAL
            for key in ("runs", "stranded", "lost_metrics", "lost_models", "unexplained_failures"):
                result[key] += rec.get(key, 0)
            result["seconds_to_terminal"].setdefault(fault, []).extend(rec["seconds_to_terminal"])
            result["failed_reasons"].setdefault(fault, []).extend(rec["failed_reasons"])
            result["per_fault"].setdefault(fault, []).append(rec)
        result["runs"] += base["runs"]
        for key in ("stranded", "lost_metrics", "lost_models"):
            result[key] += base[key]
        result["wall_s"] = round(time.monotonic() - t0, 1)
    finally:
        demo.stop()
        result["var"] = str(demo.var)
        result["demo_log_tail"] = demo.log()[-1500:] if (result["stranded"] or result["lost_metrics"]
                                                         or result["lost_models"]) else ""
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeat", type=int, default=2, help="times each fault is injected")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--rounds", type=int, default=2, help="rounds per run (the demo study allows up to 5)")
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset of " + ",".join(FAULTS))
    p.add_argument("--studies", type=int, default=5, help="studies run at once in the load case")
    p.add_argument("--hogs", type=int, default=3, help="busy-loop processes in the load case")
    p.add_argument("--hog-seconds", type=float, default=60.0, help="the CPU hog's longest duration")
    p.add_argument("--window", type=float, default=0.0,
                   help="seconds after a run's start within which faults land; 0: an undisturbed run's duration")
    p.add_argument("--stranded-after", type=float, default=120.0,
                   help="seconds after the fault clears by which every run must be terminal")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        parser().error(f"unknown faults: {sorted(unknown)}")
    echo = (lambda s: print(s, file=sys.stderr, flush=True))
    result = bench(args, echo)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k in ("faults_tried", "runs", "stranded", "lost_metrics", "lost_models", "unexplained_failures"):
            print(f"{k}: {result[k]}")
        for f, secs in result["seconds_to_terminal"].items():
            print(f"{f}: seconds to terminal {secs}; failures {result['failed_reasons'][f]}")
    return 0 if not (result["stranded"] or result["lost_metrics"] or result["lost_models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
