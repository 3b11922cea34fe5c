"""Validated shapes of the JSON stored on a Study: model hyper-parameters per model kind."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_KINDS = ("deepsurv", "savae")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Names follow the model constructors in fl_engine.models (plus local_epochs, a federation knob).
class DeepSurvParams(_Strict):
    hidden: list[int] = Field(default_factory=lambda: [32, 32], min_length=1, max_length=6,
                              description="Units per hidden layer")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1)
    batch_size: int = Field(64, ge=8, le=4096)
    local_epochs: int = Field(2, ge=1, le=100, description="Local passes over each node's data per round")


class SAVAEParams(_Strict):
    latent_dim: int = Field(5, ge=1, le=64)
    hidden: int = Field(50, ge=4, le=1024, description="Hidden units of encoder and decoders")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate")
    batch_size: int = Field(64, ge=8, le=4096)
    local_epochs: int = Field(2, ge=1, le=100, description="Local passes over each node's data per round")


PARAMS_BY_KIND: dict[str, type[_Strict]] = {"deepsurv": DeepSurvParams, "savae": SAVAEParams}


def validate_hyperparameters(kind: str, params: dict | None) -> dict:
    """Defaults filled in; raises ValueError naming each bad field."""
    if kind not in PARAMS_BY_KIND:
        raise ValueError(f"model kind {kind!r} is not one of {', '.join(MODEL_KINDS)}")
    try:
        return PARAMS_BY_KIND[kind](**(params or {})).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid {kind} hyper-parameters: {problems}") from None


def error_messages(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


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
    """Flat Flower run-config values of the privacy options (keys of fl_engine.federation.config)."""
    p = validate_privacy(options)
    return {"min_patients_per_node": int(p["min_patients_per_node"]), "min_cell_count": int(p["min_cell_count"]),
            "dp_enabled": bool(p["dp_enabled"]), "dp_clip_norm": float(p["dp_clip_norm"]),
            "dp_noise_multiplier": float(p["dp_noise_multiplier"])}
