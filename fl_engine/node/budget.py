"""The node's privacy-budget ledger: what each run has spent of a dataset's (epsilon, delta),
kept at the hospital, checked before a run touches the data (docs/privacy-budget.md).

Where it lives (`ledger_dir`): one folder per node, shared by every manager profile of a node
home (``HOME/privacy/``: the patients are the same whichever manager asks), ``DATA_DIR/privacy/``
for a node started without a home, or the node-config key ``privacy-ledger-dir``. It holds

* ``ledger.jsonl``: append-only, one JSON object a line, one line per (manager, run, dataset):
  run id, study, dataset name, version and fingerprint, task, mechanism, epsilon, delta,
  rounds, noise multiplier, clip norm, node, manager, time (UTC). A run without a DP guarantee
  (training without DP-FedAvg, synthetic generation, analyses) is recorded with epsilon null
  and a note saying so. Each write copies the old bytes unchanged plus the new line to a
  temporary file and renames it over the ledger (atomic), under a lock.
* ``budgets.json``: the operator's budget per dataset name, set with `fedhaem-node budget
  --set-epsilon`; a dataset without one gets ``privacy-epsilon-budget`` /
  ``privacy-delta-budget`` from the node config, else DEFAULT_EPSILON_BUDGET / DEFAULT_DELTA_BUDGET.

A dataset's spend counts every DP line of its name or of its table's fingerprint (the same
table registered under another name, or in another profile's registry, spends the same
budget). Runs compose by basic composition: spent epsilon and delta are sums.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from fl_engine.federation.approval import ParticipationRefused
from fl_engine.federation.privacy import DEFAULT_RUN_DELTA, MECHANISM_NONE, run_privacy_spend
from fl_engine.node.approvals import report_refusal

log = logging.getLogger("fedhaem.node")

LEDGER_FILE = "ledger.jsonl"
BUDGETS_FILE = "budgets.json"
LOCK_FILE = "ledger.lock"
# Documented defaults (docs/privacy-budget.md): a lifetime budget per dataset that the node
# operator is expected to set deliberately; epsilon 10 is the upper end of what deployed DP
# systems publish, delta 1e-5 allows ten runs at the default per-run delta of 1e-6.
DEFAULT_EPSILON_BUDGET = 10.0
DEFAULT_DELTA_BUDGET = 1e-5


class BudgetExceeded(ParticipationRefused):
    """A run that would take a dataset past its privacy budget; the message gives the figures."""


class LedgerError(ParticipationRefused):
    """A ledger that cannot be read as written: the node refuses runs until an operator looks."""


def home_ledger_dir(home: str | Path) -> Path:
    """The ledger folder of a node home (shared by all its manager profiles)."""
    return Path(home) / "privacy"


def ledger_dir(node_cfg: dict) -> Path:
    """The ledger folder of the SuperNode with this node config (see the module docstring)."""
    if node_cfg.get("privacy-ledger-dir"):
        return Path(str(node_cfg["privacy-ledger-dir"]))
    if node_cfg.get("approvals-dir"):  # a profile of a node home: HOME/ or HOME/managers/NAME/
        folder = Path(str(node_cfg["approvals-dir"])).parent
        home = folder.parent.parent if folder.parent.name == "managers" else folder
        return home_ledger_dir(home)
    if node_cfg.get("data-dir"):
        return Path(str(node_cfg["data-dir"])) / "privacy"
    raise LedgerError("the node config names no data-dir nor privacy-ledger-dir: no place for the privacy ledger")


@contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_raw(folder: Path) -> tuple[bytes, list[dict]]:
    path = folder / LEDGER_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return b"", []
    entries = []
    for i, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise LedgerError(f"privacy ledger {path}, line {i}: not JSON ({err.msg}); the node refuses DP runs "
                              "until the operator restores the file") from None
        if not isinstance(entry, dict):
            raise LedgerError(f"privacy ledger {path}, line {i}: not a JSON object")
        entries.append(entry)
    if raw and not raw.endswith(b"\n"):
        raise LedgerError(f"privacy ledger {path}: the last line is incomplete")
    return raw, entries


def read_ledger(folder: str | Path) -> list[dict]:
    """Every entry of the ledger in `folder`, oldest first ([] when there is none)."""
    return _read_raw(Path(folder))[1]


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_budgets(folder: str | Path) -> dict:
    """{dataset name: {"epsilon", "delta", "set_at"}} as the operator set them."""
    path = Path(folder) / BUDGETS_FILE
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise LedgerError(f"privacy budgets {path}: not JSON ({err.msg})") from None
    return body if isinstance(body, dict) else {}


def set_budget(folder: str | Path, dataset: str, epsilon: float, delta: float) -> dict:
    """Set the (epsilon, delta) budget of `dataset` (operator's command); returns the new entry."""
    if not (epsilon > 0 and math.isfinite(epsilon)) or not 0 < delta < 1:
        raise ValueError(f"a budget needs epsilon > 0 (finite) and 0 < delta < 1, got {epsilon}, {delta}")
    folder = Path(folder)
    with _locked(folder):
        budgets = read_budgets(folder)
        budgets[dataset] = {"epsilon": float(epsilon), "delta": float(delta), "set_at": _now()}
        _write_atomic(folder / BUDGETS_FILE, (json.dumps(budgets, indent=1, sort_keys=True) + "\n").encode())
    return budgets[dataset]


def budget_of(folder: str | Path, dataset: str, node_cfg: dict | None = None) -> dict:
    """The (epsilon, delta) budget of `dataset` and where it comes from ("operator" | "node config" | "default")."""
    b = read_budgets(folder).get(dataset)
    if isinstance(b, dict) and "epsilon" in b and "delta" in b:
        return {"epsilon": float(b["epsilon"]), "delta": float(b["delta"]), "source": "operator"}
    cfg = node_cfg or {}
    if cfg.get("privacy-epsilon-budget") or cfg.get("privacy-delta-budget"):
        return {"epsilon": float(cfg.get("privacy-epsilon-budget", DEFAULT_EPSILON_BUDGET)),
                "delta": float(cfg.get("privacy-delta-budget", DEFAULT_DELTA_BUDGET)), "source": "node config"}
    return {"epsilon": DEFAULT_EPSILON_BUDGET, "delta": DEFAULT_DELTA_BUDGET, "source": "default"}


def spent_of(entries: list[dict], dataset: str, fingerprint: str = "") -> dict:
    """Summed epsilon and delta of the DP entries of `dataset` (by name or by table fingerprint)."""
    mine = [e for e in entries if e.get("epsilon") is not None
            and (e.get("dataset") == dataset or (fingerprint and e.get("fingerprint") == fingerprint))]
    return {"epsilon": float(sum(float(e["epsilon"]) for e in mine)),
            "delta": float(sum(float(e.get("delta") or 0.0) for e in mine)), "dp_runs": len(mine),
            "runs": sum(1 for e in entries if e.get("dataset") == dataset
                        or (fingerprint and e.get("fingerprint") == fingerprint))}


def summary(folder: str | Path, datasets: list[str] = (), node_cfg: dict | None = None) -> list[dict]:
    """Per dataset (the given names plus every one in the ledger or the budgets): budget,
    spent, remaining and runs; what `fedhaem-node budget` prints."""
    folder = Path(folder)
    entries = read_ledger(folder)
    names = sorted(set(datasets) | {str(e.get("dataset")) for e in entries if e.get("dataset")}
                   | set(read_budgets(folder)))
    out = []
    for name in names:
        b = budget_of(folder, name, node_cfg)
        fps = {e.get("fingerprint") for e in entries if e.get("dataset") == name and e.get("fingerprint")}
        spent = spent_of([e for e in entries if e.get("dataset") == name or e.get("fingerprint") in fps], name)
        out.append({"dataset": name, "budget_epsilon": b["epsilon"], "budget_delta": b["delta"],
                    "budget_source": b["source"], "spent_epsilon": spent["epsilon"], "spent_delta": spent["delta"],
                    "remaining_epsilon": b["epsilon"] - spent["epsilon"], "remaining_delta": b["delta"] - spent["delta"],
                    "dp_runs": spent["dp_runs"], "runs": spent["runs"]})
    return out


# How many of a dataset's latest ledger lines a heartbeat carries to the manager.
REPORTED_CHARGES = 20
SUMMARY_KEYS = ("budget_epsilon", "budget_delta", "budget_source", "spent_epsilon", "spent_delta", "dp_runs", "runs")


def spend_report(folder: str | Path, datasets: list[str], node_cfg: dict | None = None, manager: str = "",
                 last: int = REPORTED_CHARGES) -> list[dict]:
    """What a heartbeat tells the manager of the ledger, aggregates only: per dataset of
    `datasets` its budget, spent epsilon and delta (over every manager: the budget is the
    dataset's), the number of charges ("runs") and of DP charges, and the `last` charges of
    this manager's runs (`manager` = the ledger's manager field; "" = every line): {"run",
    "study", "epsilon" (null: no DP guarantee), "delta", "time" (UTC), "dp"}."""
    folder = Path(folder)
    entries = read_ledger(folder)
    wanted = set(datasets)
    out = []
    for row in summary(folder, sorted(wanted), node_cfg):
        if row["dataset"] not in wanted:
            continue
        mine = [e for e in entries if e.get("dataset") == row["dataset"] and (not manager or e.get("manager") == manager)]
        charges = [{"run": str(e.get("run") or "")[:40], "study": str(e.get("study") or "")[:40],
                    "epsilon": e.get("epsilon"), "delta": e.get("delta"), "time": str(e.get("time") or "")[:40],
                    "dp": e.get("mechanism", MECHANISM_NONE) != MECHANISM_NONE and e.get("epsilon") is not None}
                   for e in mine[-last:]] if last > 0 else []
        out.append({"dataset": row["dataset"], **{k: row[k] for k in SUMMARY_KEYS}, "charges": charges})
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def charge_run(node_cfg: dict, cfg, node_name: str, meta: dict, run_id: str = "") -> dict:
    """Charge run `cfg` to the ledger before it touches dataset `meta` (name, version,
    fingerprint), once per (manager, run, dataset): a later message of the same run finds its
    line and is not charged again. Raises BudgetExceeded, naming the dataset, its budget, what is
    spent and what the run would add, when the run would take the dataset past its budget."""
    folder = ledger_dir(node_cfg)
    delta = float(node_cfg.get("privacy-run-delta", DEFAULT_RUN_DELTA))
    run = str(cfg.portal_run_id or run_id or "")
    manager = str(node_cfg.get("manager-id") or node_cfg.get("manager") or "")
    dataset, fingerprint = str(meta.get("name") or cfg.dataset), str(meta.get("fingerprint", ""))
    with _locked(folder):
        raw, entries = _read_raw(folder)
        for e in entries:
            if e.get("run") == run and e.get("manager") == manager and e.get("dataset") == dataset:
                return e
        spend = run_privacy_spend(cfg, delta)
        if spend["mechanism"] != MECHANISM_NONE:
            budget = budget_of(folder, dataset, node_cfg)
            spent = spent_of(entries, dataset, fingerprint)
            eps, new_eps = spend["epsilon"], spent["epsilon"] + spend["epsilon"]
            if not math.isfinite(eps) or new_eps > budget["epsilon"] + 1e-9 \
                    or spent["delta"] + spend["delta"] > budget["delta"] * (1 + 1e-9):
                raise BudgetExceeded(
                    f"privacy budget of dataset {dataset} (fingerprint {fingerprint[:16] or '?'}) would be "
                    f"exceeded: budget epsilon {budget['epsilon']:g}, delta {budget['delta']:g} "
                    f"({budget['source']}); spent epsilon {spent['epsilon']:.4g}, delta {spent['delta']:.3g} "
                    f"over {spent['dp_runs']} DP run(s); run {run or '?'} of study {cfg.study_id or '?'} would add "
                    f"epsilon {eps:.4g} at delta {spend['delta']:g} ({spend['rounds']} rounds of DP-FedAvg, noise "
                    f"multiplier {spend['noise_multiplier']:g}), total epsilon {new_eps:.4g}. Raise the noise "
                    f"multiplier or lower the rounds, or the node operator raises the budget "
                    f"(fedhaem-node budget --set-epsilon)")
        entry = {"run": run, "study": str(cfg.study_id or ""), "dataset": dataset,
                 "version": str(meta.get("version", "")), "fingerprint": fingerprint, "task": spend["task"],
                 "mechanism": spend["mechanism"], "epsilon": spend["epsilon"], "delta": spend["delta"],
                 "rounds": spend["rounds"], "noise_multiplier": spend["noise_multiplier"],
                 "clip_norm": spend["clip_norm"], "node": node_name, "manager": manager,
                 "profile": str(node_cfg.get("profile", "")), "time": _now(), "note": spend["note"]}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        _write_atomic(folder / LEDGER_FILE, raw + line)
    return entry


def ensure_within_budget(node_cfg: dict, cfg, node_name: str, meta: dict, run_id: str = "") -> dict:
    """The ClientApp's call: `charge_run`, and on a refusal log it and report it to the manager
    (which audits it) before raising. Returns the run's ledger line."""
    try:
        return charge_run(node_cfg, cfg, node_name, meta, run_id)
    except ParticipationRefused as err:
        log.error("refused run %s of study %s: %s", cfg.portal_run_id or run_id or "?", cfg.study_id or "?", err)
        report_refusal(node_cfg, cfg, str(err))
        raise
