"""Reproducibility capsule of a survival run: everything needed to run it again (engine contract,
code identity, dataset fingerprints, seeds, package versions) and the result to compare against,
as one JSON document; `rerun` runs a capsule in this process (fl_engine's in-process executor)
and reports how far the re-run's final C-index is from the recorded one.

The lineage part is captured when the model is registered (portal.studies.tracking.log_run),
so a capsule downloaded later still names the code and packages that produced the model."""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from fl_engine.node.datasets import open_registry
from fl_engine.federation.config import parse_contract
from fl_engine.federation.executor import run_in_process
from portal.audit.services import record
from portal.studies import services
from portal.studies.models import ModelVersion, RoundMetric, Run

FORMAT = "fedhaem-capsule/1"
REPO = Path(__file__).resolve().parents[2]
# The packages whose code computes a run's numbers (results depend on them), hashed as source.
SOURCE_PACKAGES = ("fedhaem_kernel", "etl", "fl_engine")
PACKAGES = ("fedhaem", "numpy", "pandas", "scipy", "scikit-learn", "torch", "flwr", "lifelines", "pycox",
            "mlflow", "mlflow-skinny", "pydantic", "pyarrow")
RESULT_METRIC = "c_index"  # Harrell's C on the pooled held-out patients, as the rounds report it


class CapsuleError(ValueError):
    """A capsule that cannot be built or re-run; the message says why."""


@functools.cache
def code_identity() -> dict:
    """{"git_commit", "source_sha256", "fedhaem"}: the commit when this is a git checkout, and a
    sha256 over the source of the packages that compute results (same code, same hash, with or
    without git)."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"git_commit": commit, "source_sha256": digest.hexdigest(), "fedhaem": _version("fedhaem")}


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def package_versions() -> dict[str, str]:
    """{distribution: version} of the packages a run's numbers depend on (those installed)."""
    return {name: v for name in PACKAGES if (v := _version(name))}


def replay_contract(run: Run) -> dict:
    """Run `run`'s engine contract as a re-run needs it: the reporting section emptied (no portal
    to post to, no run folder to write)."""
    contract = copy.deepcopy(services.flower_run_config(run))
    contract["reporting"] = {}
    return contract


def lineage(run: Run) -> dict:
    """What produced `run`'s model, captured at registration: contract, datasets (fingerprints),
    seeds, code identity, package versions, Python."""
    contract = replay_contract(run)
    return {"captured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "contract": contract,
            "datasets": [{k: d.get(k) for k in ("node", "name", "version", "fingerprint", "patients")}
                         for d in run.config.get("datasets", [])],
            "seeds": {"run": contract["data"]["seed"]},
            "code": code_identity(), "packages": package_versions(),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def recorded_result(run: Run) -> dict | None:
    """The run's final global C-index as the portal stored it, or None."""
    m = RoundMetric.objects.filter(run=run, node=RoundMetric.GLOBAL, name=RESULT_METRIC, round=run.rounds).first()
    if m is None:
        return None
    return {"metric": RESULT_METRIC, "estimator": "Harrell", "node": RoundMetric.GLOBAL, "round": m.round,
            "value": m.value}


def build(mv: ModelVersion) -> dict:
    """The capsule of registered model `mv`'s run (a JSON-able dict). Lineage recorded at
    registration wins; a model registered before lineage was recorded gets today's code and
    packages, and says so (`recorded_at_registration`: false)."""
    run = mv.run
    if run.kind != Run.Kind.SURVIVAL or run.status != Run.Status.FINISHED:
        raise CapsuleError(f"run {run.pk} is not a finished survival run")
    result = recorded_result(run)
    if result is None:
        raise CapsuleError(f"run {run.pk} has no final global {RESULT_METRIC} to reproduce")
    recorded = bool(mv.lineage)
    try:
        lin = mv.lineage or lineage(run)
    except (KeyError, TypeError, ValueError) as exc:  # settings pinned by an older portal, incomplete
        raise CapsuleError(f"run {run.pk}'s pinned settings cannot be rebuilt into a contract ({exc!r})") from exc
    return {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {"id": run.pk, "study_id": run.study_id, "study": run.study.title, "rounds": run.rounds,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "flower_run_id": run.flower_run_id},
        "model": {"registered_model_name": mv.registered_model_name, "version": mv.version,
                  "mlflow_run_id": mv.mlflow_run_id,
                  "aliases": sorted(mv.aliases.values_list("alias", flat=True))},
        "recorded_at_registration": recorded,
        **{k: lin[k] for k in ("contract", "datasets", "seeds", "code", "packages", "python", "platform")},
        "result": result,
        "rerun": "python manage.py rerun_capsule CAPSULE.json  (on the demo federation; --data-root DIR "
                 "for other node registries)",
    }


def validate(capsule) -> dict:
    """`capsule` if it has what a re-run needs, else CapsuleError naming the missing field."""
    if not isinstance(capsule, dict) or capsule.get("format") != FORMAT:
        raise CapsuleError(f"format: not a {FORMAT} document")
    for key in ("contract", "datasets", "result"):
        if not capsule.get(key):
            raise CapsuleError(f"{key}: missing")
    for i, d in enumerate(capsule["datasets"]):
        for key in ("node", "name", "fingerprint"):
            if not isinstance(d, dict) or not d.get(key):
                raise CapsuleError(f"datasets[{i}].{key}: missing")
    if not isinstance(capsule["result"].get("value"), (int, float)):
        raise CapsuleError("result.value: missing or not a number")
    try:
        parse_contract(capsule["contract"])
    except ValueError as exc:
        raise CapsuleError(f"contract: {exc}") from exc
    return capsule


def rerun(capsule: dict, node_tables: dict[str, pd.DataFrame]) -> dict:
    """Run the capsule's contract over {node name: ML-ready table} in this process; returns
    {"recorded", "rerun", "difference" (absolute), "round", "code_matches", "packages_differ"}."""
    validate(capsule)
    missing = sorted({d["node"] for d in capsule["datasets"]} - set(node_tables))
    if missing:
        raise CapsuleError(f"no table for node(s) {', '.join(missing)}")
    history = run_in_process(parse_contract(capsule["contract"]), node_tables)
    want = capsule["result"]
    got = None
    for record in history.rounds:
        if record["round"] == want["round"]:
            got = next((m["value"] for m in record["metrics"]
                        if m["node"] == want["node"] and m["name"] == want["metric"]), None)
    if got is None:
        raise CapsuleError(f"the re-run reported no {want['metric']} for round {want['round']}")
    now = package_versions()
    return {"recorded": want["value"], "rerun": got, "difference": abs(got - want["value"]),
            "round": want["round"],
            "code_matches": capsule.get("code", {}).get("source_sha256") == code_identity()["source_sha256"],
            "packages_differ": {k: [v, now.get(k, "")] for k, v in (capsule.get("packages") or {}).items()
                                if now.get(k, "") != v}}


def filename(mv: ModelVersion) -> str:
    """Download name of `mv`'s capsule: model, version and aliases, e.g.
    fedhaem-mds-os-study3-v2-champion-capsule.json."""
    aliases = "-".join(sorted(mv.aliases.values_list("alias", flat=True)))
    return f"{mv.registered_model_name}-v{mv.version}{'-' + aliases if aliases else ''}-capsule.json"



def download(actor, mv: ModelVersion) -> tuple[str, str]:
    """(file name, JSON text) of `mv`'s capsule, audited as `model.capsule` (CapsuleError when
    the run has nothing to reproduce). The caller checks the actor may see `mv`."""
    doc = build(mv)
    record(actor, "model.capsule", mv, {"run": mv.run_id, "source_sha256": doc["code"].get("source_sha256", "")})
    return filename(mv), dumps(doc)


def dumps(doc: dict) -> str:
    """The capsule file's text: sorted keys, floats written exactly (JSON repr round-trips)."""
    return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"


def load_tables(capsule: dict, registry_dirs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """{node: table} of the capsule's datasets, read from each node's local registry
    (`registry_dirs[node]`) by name and fingerprint; CapsuleError naming the node when a registry
    has no table with the recorded fingerprint (other data would not reproduce the run)."""
    tables = {}
    for d in validate(capsule)["datasets"]:
        folder = registry_dirs.get(d["node"])
        if folder is None or not Path(folder).is_dir():
            raise CapsuleError(f"node {d['node']}: no local dataset registry at {folder}")
        reg = open_registry(folder)  # with the node's keyring: its tables are encrypted at rest
        hits = [e for e in reg.list() if e.name == d["name"] and e.fingerprint == d["fingerprint"]]
        if not hits:
            held = ", ".join(f"v{e.version} {e.fingerprint[:12]}" for e in reg.list() if e.name == d["name"]) or "none"
            raise CapsuleError(f"node {d['node']}: no version of {d['name']} with fingerprint "
                               f"{d['fingerprint'][:12]}... (the registry holds: {held})")
        tables[d["node"]] = reg.load_table(d["name"], hits[-1].version)
    return tables
