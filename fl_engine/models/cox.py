"""A penalised Cox proportional hazards model (linear in the encoded features), the baseline
beside DeepSurv and SAVAE.

In a federation it is not trained by FedAvg: each round is one Newton-Raphson step on the
federation's exact L2-penalised Breslow partial likelihood (fl_engine.analytics.cox; the
"cox_sums" message kind, fl_engine.federation.cox_kinds). `fit` is the same fit on one table
(a hospital alone): `epochs` Newton steps on its exact times. Survival curves use the Breslow
baseline cumulative hazard, as DeepSurv's. numpy only.
"""
from __future__ import annotations

import numpy as np

from fl_engine.analytics.cox import CoxNewton, newton_terms, node_sums, penalise
from fl_engine.models.base import BreslowBaseline


class CoxPH(BreslowBaseline):
    """Cox model over encoded inputs x (n, p); durations in months. Weights: [coefficients (p,)]."""

    def __init__(self, n_features: int, penalizer: float = 0.01, time_step_months: float = 1.0,
                 stratified: bool = False, seed: int | None = None):
        if n_features < 1:
            raise ValueError(f"CoxPH: n_features must be >= 1, got {n_features}")
        if not penalizer >= 0:
            raise ValueError(f"CoxPH: penalizer must be >= 0, got {penalizer}")
        self.n_features = int(n_features)
        self.penalizer = float(penalizer)
        self.time_step_months = float(time_step_months)
        self.stratified = bool(stratified)
        self.beta = np.zeros(self.n_features)  # seed unused: the start (0) is the null model
        self.baseline_times: np.ndarray | None = None
        self.baseline_cumhaz: np.ndarray | None = None

    def get_weights(self) -> list[np.ndarray]:
        """[coefficients (p,) float64]."""
        return [self.beta.copy()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load [coefficients (p,)]; drops the baseline hazard (it belonged to the old ones)."""
        if len(weights) != 1 or np.shape(weights[0]) != (self.n_features,):
            raise ValueError(f"CoxPH.set_weights: expected one array of shape ({self.n_features},), got "
                             f"{[np.shape(w) for w in weights]}")
        w = np.asarray(weights[0], dtype=np.float64)
        if not np.all(np.isfinite(w)):
            raise ValueError("CoxPH.set_weights: coefficients must be finite")
        self.beta = w.copy()
        self.baseline_times = self.baseline_cumhaz = None

    def fit(self, x: np.ndarray, durations: np.ndarray, events: np.ndarray, epochs: int, seed: int = 0) -> dict:
        """`epochs` Newton steps from the current coefficients on this table's exact times;
        returns {"loss": penalised negative log partial likelihood per event, before the last step}."""
        x = np.asarray(x, dtype=np.float64)
        d, e = np.asarray(durations, float), np.asarray(events, float)
        if len(x) == 0:
            raise ValueError("CoxPH.fit: no rows to train on")
        times = np.unique(d[e > 0])
        loss = float("nan")
        if times.size:
            state = CoxNewton()
            for _ in range(max(int(epochs), 0)):
                ll, g, h = penalise(*newton_terms(node_sums(x, d, e, self.beta, times), self.beta),
                                    self.beta, self.penalizer, len(x))
                loss = -ll / max(float(e.sum()), 1.0)
                self.beta = state.step(self.beta, ll, g, h)
                if state.converged:
                    break
        self.fit_baseline(x, d, e)
        return {"loss": loss}

    def predict_risk(self, x: np.ndarray) -> np.ndarray:
        """Linear predictor x.b (n,); higher means shorter expected survival."""
        return np.asarray(x, dtype=np.float64) @ self.beta
