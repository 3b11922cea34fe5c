"""Survival models behind one protocol (`SurvivalModel`), built by name."""
from __future__ import annotations

from fl_engine.models.base import SurvivalModel

MODEL_KINDS = ("deepsurv", "savae")


def build_model(kind: str, n_features: int, params: dict | None = None) -> SurvivalModel:
    """A fresh model of `kind` ("deepsurv" | "savae") over inputs of width `n_features`."""
    params = dict(params or {})
    if n_features < 1:
        raise ValueError(f"build_model: n_features must be >= 1, got {n_features}")
    if kind == "deepsurv":
        from fl_engine.models.deepsurv import DeepSurv
        return DeepSurv(n_features, **params)
    if kind == "savae":
        try:
            from fl_engine.models.savae import SAVAE  # written separately; imported lazily
        except ImportError as err:
            raise ValueError(f"model kind 'savae' is not available: {err}") from err
        return SAVAE(n_features, **params)
    raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")


__all__ = ["MODEL_KINDS", "SurvivalModel", "build_model"]
