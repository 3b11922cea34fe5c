"""The interface every survival model implements, so one federation code path trains them all."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SurvivalModel(Protocol):
    """A survival model over encoded inputs x (n, p) float32; times in months."""

    def get_weights(self) -> list[np.ndarray]:
        """All trainable state as numpy arrays, in a fixed order (what FedAvg averages)."""

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load arrays returned by get_weights (possibly averaged)."""

    def fit(self, x: np.ndarray, durations: np.ndarray, events: np.ndarray,
            epochs: int, seed: int = 0) -> dict:
        """Train locally for `epochs` passes; returns {"loss": mean training loss of the last epoch}."""

    def predict_risk(self, x: np.ndarray) -> np.ndarray:
        """Risk score (n,): higher means shorter expected survival."""

    def predict_survival(self, x: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Survival probabilities (n, len(times)) at `times` (months)."""


def module_weights(net) -> list[np.ndarray]:
    """A torch module's state as float32 numpy arrays, in state_dict order (what FedAvg averages)."""
    return [v.detach().cpu().numpy().copy() for v in net.state_dict().values()]


def load_module_weights(net, weights: list[np.ndarray], owner: str) -> None:
    """Load arrays from `module_weights` order into `net`; ValueError naming `owner` and the
    first array whose count or shape does not fit."""
    import torch

    keys = list(net.state_dict().keys())
    if len(weights) != len(keys):
        raise ValueError(f"{owner}.set_weights: expected {len(keys)} arrays, got {len(weights)}")
    state = {}
    for k, w, ref in zip(keys, weights, net.state_dict().values()):
        if tuple(np.shape(w)) != tuple(ref.shape):
            raise ValueError(f"{owner}.set_weights: {k} has shape {np.shape(w)}, expected {tuple(ref.shape)}")
        state[k] = torch.as_tensor(np.asarray(w, dtype=np.float32))
    net.load_state_dict(state)
