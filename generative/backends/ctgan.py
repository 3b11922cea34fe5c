"""CTGAN in torch, trainable centralised or federated (our implementation; no sdv dependency).

Model: conditional tabular GAN (Xu et al., "Modeling Tabular Data using Conditional GAN",
NeurIPS 2019): mode-specific normalisation of numeric columns, a conditional vector with
training-by-sampling over discrete columns (log-frequency), residual generator with Gumbel-softmax
outputs, PacGAN discriminator trained with the WGAN-GP loss.

Federation (Fed-TGAN idea, Zhao et al., arXiv 2108.07927): nodes send per-column summaries
(``generative.transform.node_column_summaries``); the manager merges them into one global
summary, hence ONE transformer shared by all nodes; then each round every node trains generator
and discriminator on its own rows (``node_ctgan_round``) and the manager averages both networks
weighted by patients (``manager_fedavg``). Adam moments are reset at each round (they stay local).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..aggregation import message_to_torch_state, torch_state_to_message, weighted_fedavg
from ..base import BaseGenerator, FedAvgFederation, Step
from ..spec import TableSpec
from ..transform import ModeSpecificTransformer, local_summary


class _Residual(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.fc, self.bn = nn.Linear(i, o), nn.BatchNorm1d(o)

    def forward(self, x):
        return torch.cat([F.relu(self.bn(self.fc(x))), x], dim=1)


class _Gen(nn.Module):
    def __init__(self, z_dim, dims, out_dim):
        super().__init__()
        layers, d = [], z_dim
        for h in dims:
            layers.append(_Residual(d, h))
            d += h
        self.body = nn.Sequential(*layers, nn.Linear(d, out_dim))

    def forward(self, z):
        return self.body(z)


class _Disc(nn.Module):
    def __init__(self, in_dim, dims, pac):
        super().__init__()
        self.pac = pac
        layers, d = [], in_dim * pac
        for h in dims:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2), nn.Dropout(0.5)]
            d = h
        self.body = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, x):
        return self.body(x.reshape(-1, x.shape[1] * self.pac))


class CTGANGenerator(BaseGenerator):
    """Conditional tabular GAN. ``summary`` (a global summary) fixes the shared transformer;
    without it ``fit`` builds one from its own table."""

    name = "ctgan"
    iterative = True

    def __init__(self, spec: TableSpec, *, seed: int = 0, epochs: int = 100, batch_size: int = 500,
                 z_dim: int = 128, gen_dims=(256, 256), dis_dims=(256, 256), pac: int = 10,
                 lr: float = 2e-4, weight_decay: float = 1e-6, gp_weight: float = 10.0,
                 n_modes: int = 10, summary: dict | None = None):
        super().__init__(spec, seed=seed)
        self.epochs, self.batch_size, self.z_dim = int(epochs), int(batch_size), int(z_dim)
        self.gen_dims, self.dis_dims, self.pac = tuple(gen_dims), tuple(dis_dims), int(pac)
        self.lr, self.weight_decay, self.gp_weight, self.n_modes = lr, weight_decay, gp_weight, n_modes
        self.summary = None
        if summary is not None:
            self.setup(summary)

    # ----- structure
    def setup(self, summary: dict) -> None:
        """Build transformer and networks from a global summary (weights freshly initialised)."""
        torch.manual_seed(self.seed)
        self.summary = summary
        self.tf = ModeSpecificTransformer(self.spec, summary)
        cd = self.tf.cond_dim
        self.G = _Gen(self.z_dim + cd, self.gen_dims, self.tf.dim)
        self.D = _Disc(self.tf.dim + cd, self.dis_dims, self.pac)
        # global category frequencies: conditional vectors at sampling time
        self._global_freq = []
        for name, sp in self.tf.discrete:
            cnt = np.asarray(summary["columns"][name]["counts"], dtype=float)
            self._global_freq.append(cnt / max(cnt.sum(), 1.0))

    def _activate(self, raw: torch.Tensor, hard: bool = False) -> torch.Tensor:
        parts = []
        for sp in self.tf.spans:
            seg = raw[:, sp.start:sp.start + sp.dim]
            if sp.activation == "tanh":
                parts.append(torch.tanh(seg))
            else:
                parts.append(F.gumbel_softmax(seg, tau=0.2, hard=hard))
        return torch.cat(parts, dim=1)

    # ----- training
    def train_local(self, data: pd.DataFrame, epochs: int, seed: int) -> None:
        """Train G and D on a validated table for ``epochs`` passes (node-local step)."""
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        x = self.tf.encode(data, rng)
        n = len(x)
        xt = torch.as_tensor(x)
        # training-by-sampling: rows per (discrete column, category), log-frequency choice
        idx_by, logp = [], []
        for name, sp in self.tf.discrete:
            cat = x[:, sp.start:sp.start + sp.dim].argmax(1)
            idx_by.append([np.flatnonzero(cat == k) for k in range(sp.dim)])
            cnt = np.bincount(cat, minlength=sp.dim).astype(float)
            lp = np.where(cnt > 0, np.log(cnt + 1), 0.0)
            logp.append(lp / lp.sum())
        n_disc = len(self.tf.discrete)
        offsets = np.cumsum([0] + [sp.dim for _, sp in self.tf.discrete])
        batch = max(self.pac, min(self.batch_size, n) // self.pac * self.pac)
        steps = max(1, n // batch)
        optG = torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=(0.5, 0.9),
                                weight_decay=self.weight_decay)
        optD = torch.optim.Adam(self.D.parameters(), lr=self.lr, betas=(0.5, 0.9),
                                weight_decay=self.weight_decay)
        self.G.train()
        self.D.train()
        for _ in range(epochs):
            for _ in range(steps):
                cond, col, cat = self._draw_cond(batch, n_disc, offsets, logp, rng)
                perm = rng.permutation(batch)
                rows = np.array([rng.choice(idx_by[col[i]][cat[i]]) for i in perm]) if n_disc \
                    else rng.integers(0, n, batch)
                real = torch.cat([xt[rows], cond[perm]], 1) if n_disc else xt[rows]
                z = torch.randn(batch, self.z_dim)
                fake = self._activate(self.G(torch.cat([z, cond], 1) if n_disc else z))
                fake_in = torch.cat([fake, cond], 1) if n_disc else fake
                loss_d = self.D(fake_in.detach()).mean() - self.D(real).mean()
                loss_d = loss_d + self.gp_weight * self._gradient_penalty(real, fake_in.detach())
                optD.zero_grad(set_to_none=True)
                loss_d.backward()
                optD.step()

                cond, col, cat = self._draw_cond(batch, n_disc, offsets, logp, rng)
                z = torch.randn(batch, self.z_dim)
                raw = self.G(torch.cat([z, cond], 1) if n_disc else z)
                fake = self._activate(raw)
                fake_in = torch.cat([fake, cond], 1) if n_disc else fake
                loss_g = -self.D(fake_in).mean()
                if n_disc:
                    loss_g = loss_g + self._cond_loss(raw, col, cat)
                optG.zero_grad(set_to_none=True)
                loss_g.backward()
                optG.step()
        self.fit_info["last_loss_d"] = float(loss_d.detach())
        self.fit_info["last_loss_g"] = float(loss_g.detach())
        self._fitted = True  # trained networks: their parameters may be exported

    def _draw_cond(self, batch, n_disc, offsets, logp, rng):
        if not n_disc:
            return None, None, None
        col = rng.integers(0, n_disc, batch)
        cat = np.array([rng.choice(len(logp[j]), p=logp[j]) for j in col])
        cond = np.zeros((batch, offsets[-1]), dtype=np.float32)
        cond[np.arange(batch), offsets[col] + cat] = 1.0
        return torch.as_tensor(cond), col, cat

    def _cond_loss(self, raw, col, cat):
        loss = 0.0
        for j, (_, sp) in enumerate(self.tf.discrete):
            m = col == j
            if m.any():
                logits = raw[torch.as_tensor(np.flatnonzero(m)), sp.start:sp.start + sp.dim]
                loss = loss + F.cross_entropy(logits, torch.as_tensor(cat[m]), reduction="sum")
        return loss / len(col)

    def _gradient_penalty(self, real, fake):
        alpha = torch.rand(real.shape[0] // self.pac, 1, 1).repeat(1, self.pac, real.shape[1])
        alpha = alpha.reshape(-1, real.shape[1])
        mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        grad = torch.autograd.grad(self.D(mix).sum(), mix, create_graph=True)[0]
        grad = grad.reshape(-1, self.pac * real.shape[1])
        return ((grad.norm(2, dim=1) - 1) ** 2).mean()

    # ----- template hooks
    def _fit(self, data: pd.DataFrame) -> None:
        if self.summary is None:
            self.setup(local_summary(data, self.spec, n_modes=self.n_modes, seed=self.seed))
        self.train_local(data, self.epochs, self.seed)

    @torch.no_grad()
    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        torch.manual_seed(int(rng.integers(2**31)))
        self.G.eval()
        n_disc = len(self.tf.discrete)
        chunks = []
        for start in range(0, n, 10000):
            m = min(10000, n - start)
            z = torch.randn(m, self.z_dim)
            if n_disc:
                # CTGAN sampling: condition on a random discrete column at its real frequency
                offsets = np.cumsum([0] + [sp.dim for _, sp in self.tf.discrete])
                col = rng.integers(0, n_disc, m)
                cat = np.array([rng.choice(len(self._global_freq[j]), p=self._global_freq[j]) for j in col])
                cond = np.zeros((m, offsets[-1]), dtype=np.float32)
                cond[np.arange(m), offsets[col] + cat] = 1.0
                z = torch.cat([z, torch.as_tensor(cond)], 1)
            chunks.append(self._activate(self.G(z), hard=True).numpy())
        self.G.train()
        return self.tf.decode(np.concatenate(chunks))

    def _get_parameters(self) -> dict:
        out = {f"G/{k}": v for k, v in torch_state_to_message(self.G).items()}
        out.update({f"D/{k}": v for k, v in torch_state_to_message(self.D).items()})
        return out

    def _set_parameters(self, params: dict) -> None:
        if self.summary is None:
            raise RuntimeError("ctgan: call setup(global_summary) before set_parameters()")
        message_to_torch_state(self.G, {k[2:]: v for k, v in params.items() if k.startswith("G/")})
        message_to_torch_state(self.D, {k[2:]: v for k, v in params.items() if k.startswith("D/")})


# ------------------------------------------------------------------ federated protocol
def node_ctgan_round(spec: TableSpec, summary: dict, params: dict | None, df: pd.DataFrame, *,
                     local_epochs: int, seed: int, **hyper) -> dict:
    """Node side, one round: load the global networks, train on own rows, return
    {"n": patients, "params": {name: array}} (no rows)."""
    g = CTGANGenerator(spec, seed=seed, summary=summary, **hyper)
    if params is not None:
        g.set_parameters(params)
    data = spec.validate(df, where="node_ctgan_round")
    g.train_local(data, local_epochs, seed)
    return {"n": len(data), "params": g.get_parameters()}


def manager_fedavg(updates: list[dict]) -> dict:
    """Manager side: patient-weighted FedAvg of node updates {"n", "params"}."""
    return weighted_fedavg([u["params"] for u in updates], [u["n"] for u in updates])


class CTGANFederation(FedAvgFederation):
    """CTGAN across nodes: FedAvg rounds of generator and discriminator."""

    name = "ctgan"
    backend = CTGANGenerator

    def steps(self) -> tuple[Step, ...]:
        return (self.round_step(), self.alone_step())

    def train_round(self, params: dict | None, train: pd.DataFrame, seed: int) -> dict:
        return node_ctgan_round(self.spec, self.summary, params, train, local_epochs=self.local_epochs,
                                seed=seed, **self.round_hyper)
