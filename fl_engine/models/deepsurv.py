"""DeepSurv: a multilayer perceptron trained with the Cox partial likelihood.

Katzman JL et al. "DeepSurv: personalized treatment recommender system using a Cox proportional
hazards deep neural network". BMC Med Res Methodol 18:24 (2018). The loss is the negative Cox
log partial likelihood with Breslow's handling of tied times (Breslow 1974); survival curves use
the Breslow estimate of the baseline cumulative hazard.

No batch normalisation on purpose: FedAvg averages trainable parameters only, and running
statistics would need their own aggregation rule.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fl_engine.models.base import BreslowBaseline, load_module_weights, module_weights
from fl_engine.models.optim import Adam


def cox_ph_loss(risk: torch.Tensor, durations: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
    """Mean negative Cox log partial likelihood (Breslow ties); risk, durations, events: (n,)."""
    order = torch.argsort(durations, descending=True, stable=True)
    r, e = risk[order], events[order]
    # Subjects sorted by decreasing time: the risk set of i is the prefix 0..i (ties share the
    # set as long as tied times come together, which the Breslow approximation assumes).
    log_risk_set = torch.logcumsumexp(r, dim=0)
    n_events = e.sum()
    if n_events <= 0:
        return (r * 0.0).sum()  # no event: zero loss that keeps the graph
    return -((r - log_risk_set) * e).sum() / n_events


class DeepSurv(BreslowBaseline):
    """Cox MLP over encoded inputs x (n, p) float32; durations in months."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] | list[int] = (32, 32),
                 dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 64, seed: int | None = None):
        if n_features < 1:
            raise ValueError(f"DeepSurv: n_features must be >= 1, got {n_features}")
        if not 0 <= dropout < 1:
            raise ValueError(f"DeepSurv: dropout must be in [0, 1), got {dropout}")
        self.n_features = int(n_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.batch_size = int(batch_size)
        layers: list[nn.Module] = []
        width = self.n_features
        with torch.random.fork_rng(devices=[]):
            if seed is not None:  # None: draw from the caller's torch RNG state
                torch.manual_seed(seed)
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                if self.dropout > 0:
                    layers.append(nn.Dropout(self.dropout))
                width = h
            layers.append(nn.Linear(width, 1, bias=False))  # a Cox model has no intercept
            self.net = nn.Sequential(*layers)
        self.baseline_times: np.ndarray | None = None
        self.baseline_cumhaz: np.ndarray | None = None

    # --- SurvivalModel protocol -------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Parameters as float32 arrays in state_dict order."""
        return module_weights(self.net)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load arrays in get_weights order; drops the baseline hazard (it belonged to old weights)."""
        load_module_weights(self.net, weights, "DeepSurv")
        self.baseline_times = self.baseline_cumhaz = None

    def fit(self, x: np.ndarray, durations: np.ndarray, events: np.ndarray,
            epochs: int, seed: int = 0) -> dict:
        """Adam on mini-batches for `epochs` passes; returns {"loss": mean loss of the last epoch}."""
        x_t, d_t, e_t = self._tensors(x, durations, events)
        n = len(x_t)
        if n == 0:
            raise ValueError("DeepSurv.fit: no rows to train on")
        bs = n if self.batch_size <= 0 else min(self.batch_size, n)
        opt = Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        last = float("nan")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            self.net.train()
            for _ in range(max(int(epochs), 0)):
                perm = torch.randperm(n, generator=gen)
                total, batches = 0.0, 0
                for start in range(0, n, bs):
                    idx = perm[start:start + bs]
                    if e_t[idx].sum() == 0:
                        continue  # a batch without events carries no partial-likelihood signal
                    opt.zero_grad()
                    loss = cox_ph_loss(self.net(x_t[idx]).squeeze(-1), d_t[idx], e_t[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    batches += 1
                last = total / batches if batches else float("nan")
        self.net.eval()
        self.fit_baseline(x, durations, events)
        return {"loss": last}

    def predict_risk(self, x: np.ndarray) -> np.ndarray:
        """Log relative hazard (n,); higher means shorter expected survival."""
        self.net.eval()
        with torch.no_grad():
            return self.net(torch.as_tensor(np.asarray(x, dtype=np.float32))).squeeze(-1).numpy().astype(float)

    @staticmethod
    def _tensors(x, durations, events):
        x = np.asarray(x, dtype=np.float32)
        d = np.asarray(durations, dtype=np.float32)
        e = np.asarray(events, dtype=np.float32)
        if x.ndim != 2 or len(d) != len(x) or len(e) != len(x):
            raise ValueError(f"DeepSurv: x must be (n, p) with durations/events (n,); got "
                             f"{x.shape}, {d.shape}, {e.shape}")
        if np.isnan(x).any():
            raise ValueError("DeepSurv: x contains NaN (encode with the Preprocessor first)")
        return torch.as_tensor(x), torch.as_tensor(d), torch.as_tensor(e)
