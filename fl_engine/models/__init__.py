"""Survival models behind one protocol (`SurvivalModel`), built by name."""
from __future__ import annotations

from fl_engine.models.base import SurvivalModel
from fl_engine.models.cox import CoxPH
from fl_engine.models.params import FEDERATION_KEYS, MODEL_KINDS, PARAMS_BY_KIND, validate_params


def build_model(kind: str, n_features: int, params: dict | None = None) -> SurvivalModel:
    """A fresh model of `kind` ("deepsurv" | "savae" | "cox") over inputs of width `n_features`.

    Parameters named in the kind's spec (fl_engine.models.params) are checked against its bounds,
    the same ones the portal enforces; engine-only arguments (seed, column_kinds, time_scale...)
    pass through to the constructor, which refuses unknown names. Federation knobs
    (local_epochs) are ignored here."""
    if kind not in PARAMS_BY_KIND:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    if n_features < 1:
        raise ValueError(f"build_model: n_features must be >= 1, got {n_features}")
    params = dict(params or {})
    spec_fields = PARAMS_BY_KIND[kind].model_fields
    given = {k: params.pop(k) for k in list(params) if k in spec_fields}
    checked = validate_params(kind, given, fill_defaults=False)
    kwargs = {**params, **{k: v for k, v in checked.items() if k not in FEDERATION_KEYS}}
    if kind == "deepsurv":
        from fl_engine.models.deepsurv import DeepSurv  # torch loads only when a model is built
        return DeepSurv(n_features, **kwargs)
    if kind == "cox":
        return CoxPH(n_features, **kwargs)
    from fl_engine.models.savae import SAVAE  # torch loads only when a model is built
    return SAVAE(n_features, **kwargs)


__all__ = ["MODEL_KINDS", "PARAMS_BY_KIND", "SurvivalModel", "build_model"]
