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


class BreslowBaseline:
    """Survival curves of a proportional-hazards model, S(t | x) = exp(-H0(t) exp(risk(x))), with
    Breslow's baseline cumulative hazard H0; shared by DeepSurv and the Cox model, whose
    predict_risk gives the log relative hazard."""

    baseline_times: np.ndarray | None = None
    baseline_cumhaz: np.ndarray | None = None

    def predict_risk(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - each model's own
        raise NotImplementedError

    def predict_survival(self, x: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t | x) = exp(-H0(t) exp(risk)) at `times` (months); shape (n, len(times))."""
        if self.baseline_times is None:
            raise RuntimeError(f"{type(self).__name__}.predict_survival: no baseline hazard; call "
                               "fit_baseline, or set_baseline after loading weights")
        times = np.asarray(times, dtype=float)
        idx = np.searchsorted(self.baseline_times, times, side="right") - 1
        h0 = np.where(idx >= 0, self.baseline_cumhaz[np.clip(idx, 0, None)], 0.0)
        return np.exp(-np.outer(np.exp(self.predict_risk(x)), h0))

    def fit_baseline(self, x: np.ndarray, durations: np.ndarray, events: np.ndarray) -> None:
        """Breslow baseline cumulative hazard on (x, durations in months, events)."""
        risk = np.exp(self.predict_risk(x))
        d, e = np.asarray(durations, dtype=float), np.asarray(events, dtype=float)
        times = np.unique(d[e > 0])
        if times.size == 0:
            self.baseline_times, self.baseline_cumhaz = np.zeros(1), np.zeros(1)
            return
        order = np.argsort(d)
        at_risk = np.cumsum(risk[order][::-1])[::-1]  # sum of exp(risk) over d >= d_(i)
        first = np.searchsorted(d[order], times, side="left")
        n_ev = np.array([e[d == t].sum() for t in times])
        self.set_baseline(times, np.cumsum(n_ev / at_risk[first]))

    def set_baseline(self, times: np.ndarray, cumhaz: np.ndarray) -> None:
        """Baseline cumulative hazard H0 at increasing `times` (months)."""
        self.baseline_times = np.asarray(times, dtype=float)
        self.baseline_cumhaz = np.asarray(cumhaz, dtype=float)


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
