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
