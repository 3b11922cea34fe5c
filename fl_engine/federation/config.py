"""Run configuration of a federated study: flat key/value pairs (what Flower's run config holds).

The defaults below are mirrored in ``fl_engine/federation/app/pyproject.toml``
(``[tool.flwr.app.config]``): Flower only accepts overrides of keys declared there
(a test checks the two agree).

Keys (times in seconds):
  dataset, dataset_version   name (and version, "" = latest) in each node's local registry
  use_case, endpoint         schema use case (MDS, AML, CMML, MM) and survival endpoint (os, ...)
  model, model_params        "deepsurv" | "savae", and a JSON object of model parameters
  features, feature_groups   comma-separated feature names / schema groups ("" = all)
  num_rounds, local_epochs   federated rounds; local passes over the training split per round
  fraction_train, min_nodes  share of available nodes trained per round; fewest nodes to go on
  holdout_fraction, seed     seeded held-out split on each node; seed of everything
  round_timeout_s            longest wait for the replies of one phase (and for nodes to join)
  run_timeout_s              wall-clock limit of the whole run
  poll_interval_s            how often the ServerApp polls the SuperLink for replies
  metrics_path               JSON-lines file, one line per event as it happens ("" = none)
  events_url                 the portal's run-events endpoint: every event (numbered) is POSTed
                             there with "Authorization: Token <HMAC of the run id>" (the key is
                             the ServerApp's FEDHAEM_RUN_EVENTS_KEY_FILE, never in the config,
                             which reaches the nodes) and printed in the ServerApp log for replay
  portal_run_id              the portal's run id, echoed as "run" in every metrics record
  study_id                   the portal's study id ("" = a run outside the portal)
  study_settings             JSON object: the study's approved settings (approval_hash)
  participants               JSON list of {"node", "node_id", "fingerprint", "version"}: the only nodes
                             the run may reach ("[]" = every connected node; engine tests only)
  join_grace_s               how long the run waits for every participant before it starts
                             with min_nodes of them
  model_dir                  folder for the final model.npz + model.json ("" = none); for
                             synthesis runs synthetic.csv + synthesis.json
  task                       "survival" (default: a survival model) | "synthesis" (a synthetic
                             cohort, fl_engine.federation.synthesis)
  generator                  synthesis: "vae_bgm" | "bayesian_network" | "ctgan" | "sd_sharing"
  generator_params           synthesis: JSON object of generator hyper-parameters
  synth_rows                 synthesis: rows of the final cohort (0 = the federation's
                             training patients)
  fuse_evaluation            evaluate the incoming global model inside the next train phase
                             (one message phase per round instead of two, plus one final
                             evaluate phase); round r's record is then written when round r+1's
                             training ends, and only the nodes trained in r+1 evaluate it
  comparison                 after the last round each node also trains the model on its own
                             patients only and scores the conventional prognostic scores, on
                             its held-out split (scalars: isolated_c_index, <score>_c_index),
                             added to the last round's record for the comparison page
  min_patients_per_node      a node whose training split has fewer patients refuses to take
                             part (stats, train, baseline); 0 = no minimum
  min_cell_count             a node whose held-out split has fewer than this many patients or
                             events does not report its C-index; 0 = always report
  dp_enabled, dp_clip_norm,  DP-FedAvg (fl_engine.federation.privacy): nodes clip their update
  dp_noise_multiplier        to L2 norm dp_clip_norm, the manager averages with equal weights
                             and adds N(0, (dp_noise_multiplier * dp_clip_norm / m)^2)
The privacy defaults here are "off" (plain engine runs and tests); the portal always sends its
study's values, whose defaults are strict (portal.studies.config.PrivacyOptions).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields

from fedhaem_kernel.schema import get_schema

DEFAULT_RUN_CONFIG: dict[str, object] = {
    "dataset": "",
    "dataset_version": "",
    "use_case": "MDS",
    "endpoint": "os",
    "model": "deepsurv",
    "model_params": "{}",
    "features": "",
    "feature_groups": "",
    "num_rounds": 3,
    "local_epochs": 1,
    "fraction_train": 1.0,
    "min_nodes": 2,
    "holdout_fraction": 0.2,
    "seed": 0,
    "round_timeout_s": 600.0,
    "run_timeout_s": 3600.0,
    "poll_interval_s": 0.1,
    "metrics_path": "",
    "events_url": "",
    "portal_run_id": "",
    "study_id": "",
    "study_settings": "{}",
    "participants": "[]",
    "join_grace_s": 30.0,
    "model_dir": "",
    "task": "survival",
    "generator": "vae_bgm",
    "generator_params": "{}",
    "synth_rows": 0,
    "fuse_evaluation": False,
    "comparison": False,
    "min_patients_per_node": 0,
    "min_cell_count": 0,
    "dp_enabled": False,
    "dp_clip_norm": 1.0,
    "dp_noise_multiplier": 1.0,
}


@dataclass(frozen=True)
class RunConfig:
    """Validated run configuration (see the module docstring for each key)."""

    dataset: str
    dataset_version: str
    use_case: str
    endpoint: str
    model: str
    model_params: dict
    features: tuple[str, ...]
    feature_groups: tuple[str, ...]
    num_rounds: int
    local_epochs: int
    fraction_train: float
    min_nodes: int
    holdout_fraction: float
    seed: int
    round_timeout_s: float
    run_timeout_s: float
    poll_interval_s: float
    metrics_path: str
    events_url: str
    portal_run_id: str
    study_id: str
    study_settings: dict
    participants: tuple
    join_grace_s: float
    model_dir: str
    task: str
    generator: str
    generator_params: dict
    synth_rows: int
    fuse_evaluation: bool
    comparison: bool
    min_patients_per_node: int
    min_cell_count: int
    dp_enabled: bool
    dp_clip_norm: float
    dp_noise_multiplier: float

    def to_flat(self) -> dict:
        """Back to flat Flower-compatible values."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("model_params", "generator_params", "study_settings"):
                v = json.dumps(v, sort_keys=True)
            elif f.name == "participants":
                v = json.dumps([dict(p) for p in v], sort_keys=True)
            elif isinstance(v, tuple):
                v = ",".join(v)
            out[f.name] = v
        return out


def parse_run_config(values: dict, strict: bool = True) -> RunConfig:
    """Defaults + `values` -> RunConfig; bad values raise ValueError naming the key, and so do
    unknown keys when `strict` (nodes parse leniently: a newer manager may add keys)."""
    unknown = sorted(set(values) - set(DEFAULT_RUN_CONFIG))
    if unknown and not strict:
        values = {k: v for k, v in values.items() if k in DEFAULT_RUN_CONFIG}
    elif unknown:
        raise ValueError(f"run config: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(DEFAULT_RUN_CONFIG)}")
    merged = {**DEFAULT_RUN_CONFIG, **values}
    out: dict = {}
    for key, default in DEFAULT_RUN_CONFIG.items():
        v = merged[key]
        try:
            if isinstance(default, bool):
                if isinstance(v, str):
                    if v.lower() not in ("true", "false", "1", "0"):
                        raise ValueError("not a boolean")
                    v = v.lower() in ("true", "1")
                v = bool(v)
            elif isinstance(default, int):
                if isinstance(v, float) and not v.is_integer():
                    raise ValueError("not an integer")
                v = int(v)
            elif isinstance(default, float):
                v = float(v)
            else:
                v = "" if v is None else str(v)
        except (TypeError, ValueError) as err:
            raise ValueError(f"run config: {key}={merged[key]!r}: {err}") from None
        out[key] = v
    for key in ("model_params", "generator_params", "study_settings"):
        out[key] = _json_object(key, out[key])
    out["participants"] = _participants(out["participants"])
    out["features"] = _split(out["features"])
    out["feature_groups"] = _split(out["feature_groups"])
    out["use_case"] = out["use_case"].upper()
    _check(out)
    return RunConfig(**out)


def _json_object(key: str, value) -> dict:
    """A JSON-object run-config value (text or dict) as a dict; ValueError naming `key` otherwise."""
    try:
        obj = json.loads(value or "{}") if isinstance(value, str) else dict(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"run config: {key} is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"run config: {key} must be a JSON object")
    return obj


def _participants(value) -> tuple:
    """The participants JSON list -> tuple of {"node", "node_id", "fingerprint"} dicts."""
    try:
        items = json.loads(value or "[]") if isinstance(value, str) else list(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"run config: participants is not valid JSON: {err}") from None
    if not isinstance(items, list):
        raise ValueError("run config: participants must be a JSON list")
    out = []
    for i, p in enumerate(items):
        if not isinstance(p, dict) or not str(p.get("node", "")).strip() or not str(p.get("node_id", "")).isdigit():
            raise ValueError(f"run config: participants[{i}] needs a node name and a numeric node_id: {p!r}")
        out.append({"node": str(p["node"]), "node_id": str(p["node_id"]),
                    "fingerprint": str(p.get("fingerprint", "")), "version": str(p.get("version", ""))})
    if len({p["node_id"] for p in out}) != len(out) or len({p["node"] for p in out}) != len(out):
        raise ValueError("run config: participants name a node twice")
    return tuple(out)


def _split(s: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in s.split(",") if p.strip())


def _check(c: dict) -> None:
    def bad(key, why):
        raise ValueError(f"run config: {key}={c[key]!r}: {why}")
    try:
        schema = get_schema(c["use_case"])
    except KeyError as err:
        raise ValueError(f"run config: use_case: {err.args[0]}") from None
    try:
        schema.endpoint(c["endpoint"])
    except KeyError as err:
        raise ValueError(f"run config: endpoint: {err.args[0]}") from None
    if c["model"] not in ("deepsurv", "savae"):
        bad("model", "must be deepsurv or savae")
    if c["task"] not in ("survival", "synthesis"):
        bad("task", "must be survival or synthesis")
    if c["task"] == "synthesis":
        from fl_engine.federation.synthesis import generator_hyper  # lazy: generative is heavy

        try:
            generator_hyper(c["generator"], c["generator_params"])
        except ValueError as err:
            from fl_engine.federation.synthesis import SYNTH_GENERATORS
            key = "generator_params" if c["generator"] in SYNTH_GENERATORS else "generator"
            bad(key, str(err))
    if c["synth_rows"] < 0:
        bad("synth_rows", "must be >= 0 (0 = as many rows as training patients)")
    if c["num_rounds"] < 1:
        bad("num_rounds", "must be >= 1")
    if c["local_epochs"] < 1:
        bad("local_epochs", "must be >= 1")
    if not 0 < c["fraction_train"] <= 1:
        bad("fraction_train", "must be in (0, 1]")
    if c["min_nodes"] < 1:
        bad("min_nodes", "must be >= 1")
    if not 0 < c["holdout_fraction"] < 1:
        bad("holdout_fraction", "must be in (0, 1)")
    for key in ("round_timeout_s", "run_timeout_s", "poll_interval_s", "join_grace_s"):
        if not c[key] > 0:
            bad(key, "must be > 0")
    for key in ("min_patients_per_node", "min_cell_count"):
        if c[key] < 0:
            bad(key, "must be >= 0 (0 = off)")
    if not 0 < c["dp_clip_norm"] < float("inf"):
        bad("dp_clip_norm", "must be a finite number > 0 (L2 norm of a node's update)")
    if not 0 <= c["dp_noise_multiplier"] < float("inf"):
        bad("dp_noise_multiplier", "must be a finite number >= 0")
    unknown_groups = [g for g in c["feature_groups"] if g not in schema.groups]
    if unknown_groups:
        bad("feature_groups", f"unknown group(s) {unknown_groups}; known: {schema.groups}")
