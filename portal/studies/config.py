"""Validated shapes of the JSON stored on a Study: model hyper-parameters per model kind (their
spec lives beside the models, fl_engine.models.params), privacy options, feature lists."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fl_engine.federation.contract import bounds as contract_setting
from fl_engine.models.params import (MODEL_KINDS, PARAMS_BY_KIND, DeepSurvParams, SAVAEParams,
                                     error_messages, validate_params)

__all__ = ["MODEL_KINDS", "PARAMS_BY_KIND", "DeepSurvParams", "SAVAEParams", "error_messages",
           "validate_hyperparameters", "validate_features", "FEATURES_MAX", "FEATURE_NAME_MAX",
           "DATASETS_MAX", "DESCRIPTION_MAX",
           "PrivacyOptions", "validate_privacy", "model_privacy_error", "default_privacy", "privacy_rows", "flower_privacy",
           "ROUNDS", "FRACTION_NODES", "MIN_NODES"]

# The bounds of the run settings a study sets, from the engine's one spec (no bound written twice).
ROUNDS = contract_setting("num_rounds")
FRACTION_NODES = contract_setting("fraction_train")
MIN_NODES = contract_setting("min_nodes")


def validate_hyperparameters(kind: str, params: dict | None) -> dict:
    """Defaults filled in; raises ValueError naming each bad field."""
    return validate_params(kind, params)


# A study names at most this many explicit feature columns, each at most this long (characters),
# at most this many datasets, and a description of at most this many characters.
FEATURES_MAX = 2000
FEATURE_NAME_MAX = 120
DATASETS_MAX = 200
DESCRIPTION_MAX = 10_000


def validate_features(features) -> list[str]:
    """A study's explicit feature columns; raises ValueError naming the first problem."""
    if features is None:
        return []
    if not isinstance(features, list):
        raise ValueError(f"must be a list of column names, got {type(features).__name__}")
    if len(features) > FEATURES_MAX:
        raise ValueError(f"at most {FEATURES_MAX} features, got {len(features)}")
    for i, name in enumerate(features):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"entry {i} must be a non-empty column name")
        if len(name) > FEATURE_NAME_MAX:
            raise ValueError(f"entry {i} is longer than {FEATURE_NAME_MAX} characters")
    return features


Strategy = Literal["fedavg"]


class PrivacyOptions(BaseModel):
    """A study's privacy safeguards, enforced on the nodes and the manager (fl_engine.federation.privacy).
    Defaults are the strict ones: a study saved without touching them gets them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_patients_per_node: int = Field(
        20, ge=1, le=100_000,
        description="A hospital whose training split has fewer patients does not take part (patients)")
    min_cell_count: int = Field(
        10, ge=1, le=10_000,
        description="A hospital's C-index is not reported when its held-out split has fewer patients "
                    "or fewer events than this (small-cell suppression)")
    dp_enabled: bool = Field(False, description="Differential privacy on model updates (DP-FedAvg)")
    dp_clip_norm: float = Field(
        1.0, gt=0, le=1000,
        description="Largest L2 norm of one hospital's model update per round (weight units)")
    dp_noise_multiplier: float = Field(
        1.0, ge=0, le=100,
        description="Gaussian noise std = multiplier x clipping bound / hospitals in the round")


def default_privacy() -> dict:
    """The strict defaults (the Study field's default)."""
    return PrivacyOptions().model_dump()


def validate_privacy(options: dict | None) -> dict:
    """Defaults filled in; raises ValueError naming each bad option."""
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"privacy options must be an object, got {type(options).__name__}")
    try:
        return PrivacyOptions(**(options or {})).model_dump()
    except ValidationError as exc:
        raise ValueError(f"invalid privacy options: {'; '.join(error_messages(exc))}") from None


def model_privacy_error(kind: str, privacy: dict | None) -> str:
    """"" or why model `kind` cannot run under these privacy options (the run contract refuses the
    same: fl_engine.federation.config)."""
    if kind == "cox" and (privacy or {}).get("dp_enabled"):
        return ("differential privacy (DP-FedAvg) clips and noises model updates; the exact Cox model "
                "sends sums, not updates: turn differential privacy off or choose DeepSurv or SAVAE")
    return ""


def privacy_rows(options: dict | None) -> list[tuple[str, str]]:
    """The privacy options in words with units, for the study page and report."""
    try:
        p = validate_privacy(options)
    except ValueError:
        p = {**default_privacy(), **(options or {})}  # show what is stored, even if no longer valid
    rows = [("Minimum patients per hospital (training split)", f"{p['min_patients_per_node']} patients"),
            ("Per-hospital C-index suppressed below", f"{p['min_cell_count']} patients or events")]
    if p["dp_enabled"]:
        rows.append(("Differential privacy (DP-FedAvg)",
                     f"on: updates clipped to L2 norm {p['dp_clip_norm']:g}, "
                     f"noise multiplier {p['dp_noise_multiplier']:g}"))
    else:
        rows.append(("Differential privacy (DP-FedAvg)", "off"))
    return rows


def flower_privacy(options: dict | None) -> dict:
    """The privacy section of a run contract (fl_engine.federation.contract) from the options."""
    p = validate_privacy(options)
    return {"min_patients_per_node": int(p["min_patients_per_node"]), "min_cell_count": int(p["min_cell_count"]),
            "dp_enabled": bool(p["dp_enabled"]), "dp_clip_norm": float(p["dp_clip_norm"]),
            "dp_noise_multiplier": float(p["dp_noise_multiplier"])}
