"""The parsed run configuration (RunConfig) of a federated run, and the contract's builder.

Every setting, with its section, default, bounds and meaning, is written once in
`fl_engine.federation.contract.SETTINGS`; this module turns values into a validated RunConfig
(`parse_run_config`, flat values; `parse_contract`, the nested contract) and back
(`RunConfig.to_contract`). The engine reads RunConfig's attributes (the setting names).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields

from fedhaem_kernel.schema import get_schema
from fl_engine.analytics.settings import validate_analysis
from fl_engine.federation.contract import BY_NAME, DEFAULT_RUN_CONFIG, SECTIONS, flatten, nest

__all__ = ["DEFAULT_RUN_CONFIG", "RunConfig", "as_run_config", "build_contract", "parse_contract",
           "parse_run_config"]


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
    analysis: dict
    min_patients_per_node: int
    min_cell_count: int
    dp_enabled: bool
    dp_clip_norm: float
    dp_noise_multiplier: float

    def to_contract(self) -> dict:
        """The nested contract {section: {setting: value}} (JSON-ready; parse_contract reads it)."""
        return nest(self.to_flat())

    def to_flat(self) -> dict:
        """Back to flat Flower-compatible values."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("model_params", "generator_params", "study_settings", "analysis"):
                v = json.dumps(v, sort_keys=True)
            elif f.name == "participants":
                v = json.dumps([dict(p) for p in v], sort_keys=True)
            elif isinstance(v, tuple):
                v = ",".join(v)
            out[f.name] = v
        return out


def as_run_config(config) -> RunConfig:
    """A RunConfig, a nested contract or flat settings -> RunConfig (validated)."""
    if isinstance(config, RunConfig):
        return config
    if config and all(k in SECTIONS and isinstance(v, dict) for k, v in config.items()):
        return parse_contract(config)
    return parse_run_config(config)


def parse_contract(contract: dict, strict: bool = True) -> RunConfig:
    """The nested contract -> RunConfig (ValueError naming the bad setting)."""
    return parse_run_config(flatten(contract, strict=strict), strict=strict)


def build_contract(**sections: dict) -> dict:
    """The portal's builder: the nested contract from its sections (data=..., model=...,
    federation=..., privacy=..., synthesis=..., analysis=..., reporting=...), validated and with
    every default filled in. Values may be Python objects (dicts, lists, tuples) where the flat
    form holds JSON or comma-separated text. Raises ValueError naming the bad setting."""
    flat = flatten(sections)
    for key in ("model_params", "generator_params", "study_settings", "participants", "analysis"):
        if key in flat and not isinstance(flat[key], str):
            flat[key] = json.dumps(flat[key], sort_keys=True)
    for key in ("features", "feature_groups"):
        if key in flat and isinstance(flat[key], (list, tuple)):
            flat[key] = ",".join(flat[key])
    return parse_run_config(flat).to_contract()


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
            else:  # JSON-object settings may come as dicts (parsed below)
                v = "" if v is None else (v if isinstance(v, dict) and isinstance(default, str) else str(v))
        except (TypeError, ValueError) as err:
            raise ValueError(f"run config: {key}={merged[key]!r}: {err}") from None
        out[key] = v
    for key in ("model_params", "generator_params", "study_settings", "analysis"):
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
    if c["task"] == "synthesis":
        from fl_engine.federation.synthesis import SYNTH_GENERATORS, generator_hyper  # cycle, and generative is heavy

        try:
            generator_hyper(c["generator"], c["generator_params"])
        except ValueError as err:
            key = "generator_params" if c["generator"] in SYNTH_GENERATORS else "generator"
            bad(key, str(err))
    if c["task"] == "analysis":
        try:
            c["analysis"] = validate_analysis(c["use_case"], c["endpoint"], c["analysis"])
        except ValueError as err:
            bad("analysis", str(err))
    if c["model"] == "cox" and c["dp_enabled"]:
        bad("dp_enabled", "DP-FedAvg clips and noises model updates; the exact Cox model sends sums, not "
                          "updates: turn differential privacy off or choose deepsurv or savae")
    for key, setting in BY_NAME.items():
        why = setting.check(c[key])
        if why:
            bad(key, why)
    unknown_groups = [g for g in c["feature_groups"] if g not in schema.groups]
    if unknown_groups:
        bad("feature_groups", f"unknown group(s) {unknown_groups}; known: {schema.groups}")
