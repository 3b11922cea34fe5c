"""The run contract: every setting of a federated run, written once.

One table (SETTINGS) gives each setting its section, default, bounds and meaning. Everything
else derives from it: the flat defaults (DEFAULT_RUN_CONFIG), the validation in
`fl_engine.federation.config`, the nested contract the portal builds (`build_contract`), the
bounds of the portal's forms and serializers (`bounds`), and what crosses Flower.

At the Flower edge the contract is one run-config value, ``contract`` (the nested contract as
JSON): the Flower app declares only that key, so no default is written twice, and the
ServerApp and ClientApps parse it back with `from_flower` (times in seconds).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

SECTIONS = ("data", "model", "federation", "privacy", "synthesis", "analysis", "reporting")
FLOWER_KEY = "contract"  # the one key of [tool.flwr.app.config]
MAX_ROUNDS = 500


@dataclass(frozen=True)
class Setting:
    """One run setting: `default` fixes its type; numbers may have bounds (`lo`/`hi`, exclusive
    when `lo_open`/`hi_open`); `choices` lists the allowed text values."""

    name: str
    section: str
    default: object
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value) -> str:
        """"" when `value` is within bounds / choices, else why not."""
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.lo is None and self.hi is None:
            return ""
        if value != value or value in (float("inf"), float("-inf")):
            return "must be a finite number"
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        high_ok = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        if low_ok and high_ok:
            return ""
        return "must be " + self.describe_bounds()

    def describe_bounds(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}"


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # data: what each node reads and how it splits it
    S("dataset", "data", "", "name of the dataset in each node's local registry"),
    S("dataset_version", "data", "", "its version (\"\" = the latest)"),
    S("use_case", "data", "MDS", "schema use case (fedhaem_kernel.schema)"),
    S("endpoint", "data", "os", "survival endpoint of the use case (os, ...)"),
    S("features", "data", "", "comma-separated feature names (\"\" = the groups' features)"),
    S("feature_groups", "data", "", "comma-separated schema groups (\"\" = all)"),
    S("holdout_fraction", "data", 0.2, "share of each node's patients held out for evaluation",
      lo=0, hi=1, lo_open=True, hi_open=True),
    S("seed", "data", 0, "seed of the split, the initial weights and everything random", lo=0),
    # model
    S("model", "model", "deepsurv", "survival model", choices=("deepsurv", "savae", "cox")),
    S("model_params", "model", "{}", "JSON object of the model's parameters (fl_engine.models.params)"),
    S("local_epochs", "model", 1, "local passes over the training split per round", lo=1, hi=1000),
    # federation
    S("num_rounds", "federation", 3, "federated rounds", lo=1, hi=MAX_ROUNDS),
    S("fraction_train", "federation", 1.0, "share of available nodes trained per round",
      lo=0, hi=1, lo_open=True),
    S("min_nodes", "federation", 2, "fewest nodes the run goes on with", lo=1),
    S("round_timeout_s", "federation", 600.0, "longest wait for one phase's replies", lo=0, lo_open=True),
    S("run_timeout_s", "federation", 3600.0, "wall-clock limit of the whole run", lo=0, lo_open=True),
    S("poll_interval_s", "federation", 0.1, "how often the ServerApp polls for replies", lo=0, lo_open=True),
    S("join_grace_s", "federation", 30.0, "wait for every participant before starting with min_nodes",
      lo=0, lo_open=True),
    S("fuse_evaluation", "federation", False,
      "evaluate the incoming global model inside the next train phase (one message phase per round)"),
    S("study_id", "federation", "", "the portal's study id (\"\" = a run outside the portal)"),
    S("study_settings", "federation", "{}", "JSON object: the study's approved settings (approval_hash)"),
    S("participants", "federation", "[]",
      "JSON list of {node, node_id, fingerprint, version}: the only nodes the run may reach "
      "(\"[]\" = every connected node; engine tests only)"),
    # privacy (the engine's defaults are off; the portal always sends its study's strict values)
    S("min_patients_per_node", "privacy", 0, "a node with fewer training patients refuses (0 = off)", lo=0),
    S("min_cell_count", "privacy", 0, "a node's C-index is not reported below this many held-out "
      "patients or events (0 = always)", lo=0),
    S("dp_enabled", "privacy", False, "DP-FedAvg: clipped updates, equal weights, Gaussian noise"),
    S("dp_clip_norm", "privacy", 1.0, "L2 norm a node's update is clipped to", lo=0, lo_open=True),
    S("dp_noise_multiplier", "privacy", 1.0, "noise standard deviation over the clip norm", lo=0),
    # synthesis
    S("task", "synthesis", "survival", "survival (a model), synthesis (a synthetic cohort) or analysis "
      "(description, Kaplan-Meier, log-rank, Cox from aggregates)", choices=("survival", "synthesis", "analysis")),
    S("generator", "synthesis", "vae_bgm", "synthetic-data generator"),
    S("generator_params", "synthesis", "{}", "JSON object of the generator's hyper-parameters"),
    S("synth_rows", "synthesis", 0, "rows of the final cohort (0 = the training patients)", lo=0, hi=1_000_000),
    # analysis
    S("comparison", "analysis", False, "after the last round: each node's own model and the "
      "conventional scores on its held-out split"),
    S("analysis", "analysis", "{}", "JSON object: the analysis study's settings "
      "(fl_engine.analytics.settings.validate_analysis; task analysis)"),
    # reporting: where results go
    S("metrics_path", "reporting", "", "JSON-lines file, one line per event (\"\" = none)"),
    S("events_url", "reporting", "", "the portal's run-events endpoint (events POSTed, HMAC token)"),
    S("portal_run_id", "reporting", "", "the portal's run id, echoed in every event"),
    S("model_dir", "reporting", "", "folder for the final model or cohort files (\"\" = none)"),
)
del S

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULT_RUN_CONFIG: dict[str, object] = {s.name: s.default for s in SETTINGS}


def bounds(name: str) -> Setting:
    """The Setting `name` (its lo / hi for forms and serializers)."""
    return BY_NAME[name]


def nest(flat: dict) -> dict:
    """Flat {setting: value} -> the nested contract {section: {setting: value}} (unknown keys
    raise ValueError naming them)."""
    unknown = sorted(set(flat) - set(BY_NAME))
    if unknown:
        raise ValueError(f"run contract: unknown setting(s) {', '.join(unknown)}")
    out: dict[str, dict] = {}
    for name, value in flat.items():
        out.setdefault(BY_NAME[name].section, {})[name] = value
    return out


def flatten(contract: dict, strict: bool = True) -> dict:
    """The nested contract -> flat {setting: value}. A setting under the wrong section, an
    unknown section or setting raise ValueError when `strict` (nodes read leniently: a newer
    manager may add settings)."""
    if not isinstance(contract, dict):
        raise ValueError("run contract: an object of sections is required")
    flat: dict = {}
    for section, values in contract.items():
        if section not in SECTIONS:
            if strict:
                raise ValueError(f"run contract: unknown section {section!r}; known: {', '.join(SECTIONS)}")
            continue
        if not isinstance(values, dict):
            raise ValueError(f"run contract: section {section!r} must be an object")
        for name, value in values.items():
            s = BY_NAME.get(name)
            if s is None or s.section != section:
                if strict:
                    where = f" (it belongs to {s.section!r})" if s else ""
                    raise ValueError(f"run contract: {section}.{name} is not a setting of that section{where}")
                continue
            flat[name] = value
    return flat


def to_flower(contract: dict) -> dict:
    """The Flower run config of a nested contract: its one key."""
    return {FLOWER_KEY: json.dumps(contract, sort_keys=True, separators=(",", ":"))}


def from_flower(run_config: dict, strict: bool = True) -> dict:
    """Flower's run config -> flat settings (what `parse_run_config` takes)."""
    text = run_config.get(FLOWER_KEY, "")
    try:
        contract = json.loads(text or "{}")
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"run config: {FLOWER_KEY} is not valid JSON: {err}") from None
    return flatten(contract, strict=strict)
