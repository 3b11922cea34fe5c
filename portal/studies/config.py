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
