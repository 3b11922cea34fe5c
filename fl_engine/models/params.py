"""The parameter spec of each survival model: names, defaults and bounds, in one place.

The portal's study form and API, and `fl_engine.models.build_model`, all validate against these
classes; nothing else writes a bound. They live in this small module beside the models rather
than inside deepsurv.py / savae.py because those import torch, and the portal reads the specs
at start-up (forms, serializers) without loading torch.

Names follow the model constructors, plus `local_epochs` (local passes over a node's training
split per round), a federation knob that build_model does not take.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_KINDS = ("deepsurv", "savae", "cox")

# Keys of a spec that are not constructor arguments (the federation loop reads them).
FEDERATION_KEYS = ("local_epochs",)


class ModelParams(BaseModel):
    """Fields every model shares. Unknown names, NaN, infinity and loose types (true for 1, "32"
    for 32) are refused: these values arrive as JSON from browsers and nodes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate")
    batch_size: int = Field(64, ge=8, le=4096, description="Patients per mini-batch")
    local_epochs: int = Field(2, ge=1, le=100, description="Local passes over each node's data per round")


LayerWidth = Annotated[int, Field(ge=1, le=1024)]


class DeepSurvParams(ModelParams):
    """fl_engine.models.deepsurv.DeepSurv."""

    hidden: list[LayerWidth] = Field(default_factory=lambda: [32, 32], min_length=1, max_length=6,
                                     description="Units per hidden layer")
    dropout: float = Field(0.1, ge=0.0, le=0.9, description="Dropout after each hidden layer (fraction)")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="Adam L2 penalty")


class SAVAEParams(ModelParams):
    """fl_engine.models.savae.SAVAE."""

    latent_dim: int = Field(5, ge=1, le=64, description="Latent dimensions")
    hidden: int = Field(50, ge=4, le=1024, description="Hidden units of encoder and decoders")
    dropout: float = Field(0.2, ge=0.0, le=0.9, description="Decoder dropout (fraction)")


class CoxParams(BaseModel):
    """fl_engine.models.cox.CoxPH: trained by exact Newton steps, not by gradient descent (no
    learning rate, no batches); one round is one Newton step of the federation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    penalizer: float = Field(0.01, ge=0, le=10,
                             description="L2 penalty per patient on the coefficients (lifelines' penalizer)")
    time_step_months: float = Field(1.0, gt=0, le=12,
                                    description="Time grid of the sums hospitals send (months); times within "
                                                "one step count as tied")
    stratified: bool = Field(False, description="Stratify by hospital (each its own baseline hazard; "
                                                "hospitals send gradient and Hessian sums only)")
    local_epochs: int = Field(1, ge=1, le=100,
                              description="Newton steps per round when a hospital fits alone")


PARAMS_BY_KIND: dict[str, type[BaseModel]] = {"deepsurv": DeepSurvParams, "savae": SAVAEParams, "cox": CoxParams}


def error_messages(exc: ValidationError) -> list[str]:
    """'field.index: reason' per problem of a pydantic error."""
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


def spec_for(kind: str) -> type[ModelParams]:
    """The spec class of a model kind; ValueError for an unknown kind."""
    if kind not in PARAMS_BY_KIND:
        raise ValueError(f"model kind {kind!r} is not one of {', '.join(MODEL_KINDS)}")
    return PARAMS_BY_KIND[kind]


def validate_params(kind: str, params: dict | None, *, fill_defaults: bool = True) -> dict:
    """`params` checked against the kind's spec; defaults filled in (or only the given keys kept
    when `fill_defaults` is false). Raises ValueError naming each bad field."""
    spec = spec_for(kind)
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"{kind} hyper-parameters must be an object, got {type(params).__name__}")
    try:
        checked = spec.model_validate(params or {})
    except ValidationError as exc:
        raise ValueError(f"invalid {kind} hyper-parameters: {'; '.join(error_messages(exc))}") from None
    return checked.model_dump() if fill_defaults else checked.model_dump(exclude_unset=True)


def field_bounds(kind: str, name: str) -> dict:
    """JSON-schema bounds of one spec field (minimum, maximum, exclusiveMinimum, exclusiveMaximum,
    minItems, maxItems, and `items` for a list), for forms and API docs."""
    prop = spec_for(kind).model_json_schema()["properties"][name]
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems")
    out = {k: prop[k] for k in keys if k in prop}
    if "items" in prop:
        out["items"] = {k: prop["items"][k] for k in keys if k in prop["items"]}
    return out
