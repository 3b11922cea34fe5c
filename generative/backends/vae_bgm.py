"""VAE-BGM generator (Apellániz et al. 2024): a variational autoencoder over mixed-type columns,
then a Bayesian Gaussian mixture fitted to the latent means; sampling draws latent points from
the mixture and decodes them through the output distributions back to the original types and
ranges (numeric clipped to the observed federation range, integer columns rounded).

Heads: Gaussian (standardised model-scale numeric, one learnt log-variance per column),
Bernoulli (binary), categorical (softmax). Loss = negative log-likelihood + beta * KL.

Federation: the VAE trains by patient-weighted FedAvg (``node_vae_round`` / ``manager_fedavg``);
the latent mixture is combined as a mixture of node mixtures weighted by patients
(``node_latent_mixture`` / ``manager_latent_mixture``): each node encodes its own rows with the
global encoder and shares only the mixture weights, means and covariances.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..aggregation import message_to_torch_state, torch_state_to_message, weighted_fedavg
from ..base import BaseGenerator
from ..spec import TableSpec
from ..transform import StandardEncoder, local_summary


class _VAE(nn.Module):
    def __init__(self, in_dim, n_numeric, out_dim, hidden, latent):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out_dim))
        self.num_logvar = nn.Parameter(torch.full((max(n_numeric, 1),), -1.0))

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), torch.clamp(self.logvar(h), -8, 8)


class VAEBGMGenerator(BaseGenerator):
    """VAE + latent Bayesian Gaussian mixture; ``summary`` (global summary) fixes the encoder."""

    name = "vae_bgm"
    iterative = True

    def __init__(self, spec: TableSpec, *, seed: int = 0, epochs: int = 200, batch_size: int = 64,
                 hidden: int = 128, latent: int = 8, lr: float = 1e-3, beta: float = 1.0,
                 n_components: int = 10, summary: dict | None = None):
        super().__init__(spec, seed=seed)
        self.epochs, self.batch_size, self.hidden, self.latent = int(epochs), int(batch_size), int(hidden), int(latent)
        self.lr, self.beta, self.n_components = lr, beta, int(n_components)
        self.summary = None
        self.mixture: dict | None = None
        if summary is not None:
            self.setup(summary)

    def setup(self, summary: dict) -> None:
        """Build encoder and network from a global summary (weights freshly initialised)."""
        torch.manual_seed(self.seed)
        self.summary = summary
        self.enc = StandardEncoder(self.spec, summary)
        self.num_spans = [sp for sp in self.enc.spans if sp.role == "numeric"]
        self.net = _VAE(self.enc.dim, len(self.num_spans), self.enc.dim, self.hidden, self.latent)
        self.num_idx = torch.as_tensor([sp.start for sp in self.num_spans], dtype=torch.long)
        self.bin_idx = torch.as_tensor([sp.start for sp in self.enc.spans if sp.role == "binary"], dtype=torch.long)
        self.cat_spans = [sp for sp in self.enc.spans if sp.role == "category"]

    def _loss(self, x):
        mu, logvar = self.net.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        out = self.net.dec(z)
        nll = torch.zeros(x.shape[0])
        if len(self.num_idx):
            lv = self.net.num_logvar[:len(self.num_idx)]
            d = x[:, self.num_idx] - out[:, self.num_idx]
            nll = nll + 0.5 * (d * d / torch.exp(lv) + lv).sum(1)
        if len(self.bin_idx):
            nll = nll + F.binary_cross_entropy_with_logits(out[:, self.bin_idx], x[:, self.bin_idx],
                                                           reduction="none").sum(1)
        for sp in self.cat_spans:
            nll = nll + F.cross_entropy(out[:, sp.start:sp.start + sp.dim],
                                        x[:, sp.start:sp.start + sp.dim].argmax(1), reduction="none")
        kl = -0.5 * (1 + logvar - mu * mu - torch.exp(logvar)).sum(1)
        return (nll + self.beta * kl).mean()

    def train_local(self, data: pd.DataFrame, epochs: int, seed: int) -> float:
        """Train the VAE on a validated table for ``epochs`` passes; returns the last loss."""
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        x = torch.as_tensor(self.enc.encode(data))
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.net.train()
        loss = torch.tensor(float("nan"))
        for _ in range(epochs):
            perm = rng.permutation(len(x))
            for s in range(0, len(x), self.batch_size):
                b = perm[s:s + self.batch_size]
                if len(b) < 2:
                    continue
                loss = self._loss(x[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.fit_info["last_loss"] = float(loss.detach())
        return self.fit_info["last_loss"]

    @torch.no_grad()
    def latent_means(self, data: pd.DataFrame) -> np.ndarray:
        """Encoder means (n, latent) of a validated table."""
        self.net.eval()
        mu, _ = self.net.encode(torch.as_tensor(self.enc.encode(data)))
        return mu.numpy().astype(np.float64)

    def _fit(self, data: pd.DataFrame) -> None:
        if self.summary is None:
            self.setup(local_summary(data, self.spec, seed=self.seed))
        self.train_local(data, self.epochs, self.seed)
        self.mixture = manager_latent_mixture([fit_latent_bgm(self.latent_means(data), self.n_components, self.seed)])

    @torch.no_grad()
    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        if self.mixture is None:
            raise RuntimeError("vae_bgm: no latent mixture; fit() or set the federated mixture")
        torch.manual_seed(int(rng.integers(2**31)))
        self.net.eval()
        m = self.mixture
        w = np.asarray(m["weights"], dtype=float)
        comp = rng.choice(len(w), size=n, p=w / w.sum())
        means, covs = np.asarray(m["means"]), np.asarray(m["covariances"])
        z = np.empty((n, means.shape[1]))
        for k in np.unique(comp):
            idx = np.flatnonzero(comp == k)
            z[idx] = rng.multivariate_normal(means[k], covs[k], size=len(idx), method="cholesky")
        out = self.net.dec(torch.as_tensor(z, dtype=torch.float32)).numpy().astype(np.float64)
        cols = {}
        sd = np.exp(0.5 * self.net.num_logvar.detach().numpy().astype(np.float64))
        j = 0
        for c, sp in zip(self.spec.columns, self.enc.spans):
            seg = out[:, sp.start:sp.start + sp.dim]
            if sp.role == "numeric":
                v = seg[:, 0] + sd[j] * rng.standard_normal(n)
                j += 1
                cols[c.name] = self.enc.decode_numeric(c, v)
            elif sp.role == "binary":
                cols[c.name] = (rng.random(n) < 1 / (1 + np.exp(-seg[:, 0]))).astype(np.int64)
            else:
                p = np.exp(seg - seg.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                idx = (p.cumsum(1) < rng.random((n, 1))).sum(1).clip(0, sp.dim - 1)
                cols[c.name] = np.asarray(c.categories, dtype=object)[idx]
        return pd.DataFrame(cols)

    def _get_parameters(self) -> dict:
        return torch_state_to_message(self.net)

    def _set_parameters(self, params: dict) -> None:
        if self.summary is None:
            raise RuntimeError("vae_bgm: call setup(global_summary) before set_parameters()")
        message_to_torch_state(self.net, params)

    def set_mixture(self, mixture: dict) -> None:
        """Install a (federated) latent mixture {"weights", "means", "covariances"}."""
        self.mixture = mixture


def fit_latent_bgm(z: np.ndarray, n_components: int, seed: int) -> dict:
    """Bayesian Gaussian mixture on latent means z (n, d) -> {"n", "weights", "means",
    "covariances"} (components with weight < 0.1 % dropped)."""
    from sklearn.mixture import BayesianGaussianMixture

    k = int(min(n_components, max(1, len(z) // 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = BayesianGaussianMixture(n_components=k, covariance_type="full", max_iter=300,
                                    reg_covar=1e-5, random_state=seed).fit(z)
    keep = m.weights_ > 1e-3
    w = m.weights_[keep]
    return {"n": int(len(z)), "weights": w / w.sum(), "means": m.means_[keep].copy(),
            "covariances": m.covariances_[keep].copy()}


# ------------------------------------------------------------------ federated protocol
def node_vae_round(spec: TableSpec, summary: dict, params: dict | None, df: pd.DataFrame, *,
                   local_epochs: int, seed: int, **hyper) -> dict:
    """Node side, one round: load the global VAE, train on own rows, return {"n", "params"}."""
    g = VAEBGMGenerator(spec, seed=seed, summary=summary, **hyper)
    if params is not None:
        g.set_parameters(params)
    data = spec.validate(df, where="node_vae_round")
    g.train_local(data, local_epochs, seed)
    return {"n": len(data), "params": torch_state_to_message(g.net)}


def manager_fedavg(updates: list[dict]) -> dict:
    """Manager side: patient-weighted FedAvg of node updates {"n", "params"}."""
    return weighted_fedavg([u["params"] for u in updates], [u["n"] for u in updates])


def node_latent_mixture(spec: TableSpec, summary: dict, params: dict, df: pd.DataFrame, *,
                        seed: int, **hyper) -> dict:
    """Node side: encode own rows with the global VAE, fit a BGM, return its parameters."""
    g = VAEBGMGenerator(spec, seed=seed, summary=summary, **hyper)
    g.set_parameters(params)
    data = spec.validate(df, where="node_latent_mixture")
    return fit_latent_bgm(g.latent_means(data), g.n_components, seed)


def manager_latent_mixture(mixtures: list[dict]) -> dict:
    """Manager side: mixture of node mixtures, component weights times node patient share."""
    ns = np.array([m["n"] for m in mixtures], dtype=float)
    w = np.concatenate([np.asarray(m["weights"]) * n / ns.sum() for m, n in zip(mixtures, ns)])
    return {"n": int(ns.sum()), "weights": w / w.sum(),
            "means": np.concatenate([np.asarray(m["means"]) for m in mixtures]),
            "covariances": np.concatenate([np.asarray(m["covariances"]) for m in mixtures])}
