"""Privacy safeguards of a federated study, as pure functions (nodes and manager call them).

1. Minimum patients per node: a node whose training split is smaller refuses every phase that
   uses that split (column statistics, training, baseline hazard); `check_min_patients`.
2. Small-cell suppression: a node whose held-out split has fewer than k patients OR fewer than
   k events does not report its C-index (`suppress_small_cell`). Events are counted too because
   Harrell's C is built from pairs anchored on events: with 3 events among 40 patients the
   index describes those 3 patients.
3. Differential privacy, DP-FedAvg with client-side fixed clipping (McMahan, Ramage, Talwar,
   Zhang, "Learning Differentially Private Recurrent Language Models", ICLR 2018): each node
   clips its model update (new weights minus the global weights, all arrays as one vector) to L2
   norm <= C (`clip_update`); the manager averages the clipped updates with EQUAL weights and
   adds Gaussian noise of std z * C / m per coordinate, m = nodes aggregated in the round
   (`gaussian_noise_std`, `add_gaussian_noise`). Equal weights are what make C / m the
   sensitivity of the average to one node; a patient-weighted average would need noise scaled
   by the largest node's share. The guarantee is node-level.
4. Privacy accounting (`dp_fedavg_epsilon`, `run_privacy_spend`): the (epsilon, delta) a run
   spends, from the RDP accountant of Google's dp-accounting (Mironov, "Renyi Differential
   Privacy", CSF 2017), never computed by hand here. One DP-FedAvg round is a Gaussian mechanism
   on the sum of the clipped updates with sensitivity C (add or remove one node) and noise std
   z * C, i.e. noise multiplier z; the rounds compose. No amplification by sampling: the nodes
   of a round are chosen from the run's public seed (`core.select_nodes`), so q = 1 and every
   round of the run is charged. docs/privacy-budget.md gives the argument and its limits.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

# delta charged per DP run unless the node operator sets another (docs/privacy-budget.md):
# well below 1 / (number of nodes), the unit DP-FedAvg protects.
DEFAULT_RUN_DELTA = 1e-6
MECHANISM_DP_FEDAVG = "dp-fedavg-gaussian-rdp"
MECHANISM_NONE = "none"


class NodeRefused(ValueError):
    """A node declines a request because answering it would break a privacy rule."""


def check_min_patients(n_train: int, minimum: int, name: str, what: str = "train") -> None:
    """Raise NodeRefused naming the node and the counts when n_train < minimum (0 = no minimum)."""
    if minimum > 0 and n_train < minimum:
        raise NodeRefused(f"node {name} refuses to {what}: its training split has {n_train} patients, "
                          f"fewer than the study's minimum of {minimum} patients per node")


def suppress_small_cell(n_patients: int, n_events: int, k: int) -> bool:
    """True when a per-node metric must not be reported: fewer than k patients or k events (k=0: never)."""
    return k > 0 and (n_patients < k or n_events < k)


def update_norm(global_weights: list[np.ndarray], local_weights: list[np.ndarray]) -> float:
    """L2 norm of the update (local - global) over all arrays together, in float64."""
    if len(global_weights) != len(local_weights):
        raise ValueError(f"update: {len(local_weights)} arrays for {len(global_weights)} global arrays")
    sq = 0.0
    for g, w in zip(global_weights, local_weights):
        if np.shape(g) != np.shape(w):
            raise ValueError(f"update: array shape {np.shape(w)} differs from the global {np.shape(g)}")
        d = np.asarray(w, dtype=np.float64) - np.asarray(g, dtype=np.float64)
        sq += float(np.sum(d * d))
    return float(np.sqrt(sq))


def clip_update(global_weights: list[np.ndarray], local_weights: list[np.ndarray],
                clip_norm: float) -> list[np.ndarray]:
    """Local weights whose update from the global weights has L2 norm <= clip_norm (same shapes
    and dtypes); unchanged when already within the bound."""
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    norm = update_norm(global_weights, local_weights)
    if norm <= clip_norm:
        return [np.array(w, copy=True) for w in local_weights]
    factor = clip_norm / norm
    # Casting back to float32 can round the norm a hair above the bound: shrink until it holds.
    for _ in range(8):
        out = [(np.asarray(g, np.float64) + factor * (np.asarray(w, np.float64) - np.asarray(g, np.float64)))
               .astype(np.asarray(w).dtype) for g, w in zip(global_weights, local_weights)]
        if update_norm(global_weights, out) <= clip_norm:
            return out
        factor *= 1 - 1e-6
    return [np.array(g, copy=True) for g in global_weights]  # degenerate precision: send no update


def gaussian_noise_std(noise_multiplier: float, clip_norm: float, n_nodes: int) -> float:
    """Std of the server noise per coordinate: z * C / m (m nodes averaged with equal weights)."""
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    if noise_multiplier < 0 or not clip_norm > 0:
        raise ValueError(f"need noise_multiplier >= 0 and clip_norm > 0, got {noise_multiplier}, {clip_norm}")
    return float(noise_multiplier) * float(clip_norm) / n_nodes


def noise_seed(seed: int, round_: int) -> int:
    """Seed of the server noise of one round (reproducible runs, fresh noise every round)."""
    return zlib.crc32(f"dp-noise:{seed}:{round_}".encode()) & 0x7FFFFFFF


def add_gaussian_noise(weights: list[np.ndarray], std: float, seed: int) -> list[np.ndarray]:
    """weights + N(0, std^2) per coordinate, drawn in float64 from a seeded generator; same
    shapes and dtypes; std 0 returns exact copies."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    if std == 0:
        return [np.array(w, copy=True) for w in weights]
    rng = np.random.default_rng(seed)
    return [(np.asarray(w, np.float64) + rng.normal(0.0, std, size=np.shape(w))).astype(np.asarray(w).dtype)
            for w in weights]


def dp_fedavg_epsilon(noise_multiplier: float, rounds: int, delta: float = DEFAULT_RUN_DELTA) -> float:
    """Epsilon (at `delta`) of `rounds` DP-FedAvg rounds with noise multiplier z, node-level
    add-or-remove-one adjacency, every node in every round (q = 1): dp-accounting's RDP
    accountant on a self-composed Gaussian event. inf when z == 0 (no noise, no guarantee)."""
    # dp_accounting costs ~0.5 s to import; only the runs that account pay it (third-party import).
    from dp_accounting import dp_event, rdp

    if rounds < 0 or not 0 < delta < 1:
        raise ValueError(f"need rounds >= 0 and 0 < delta < 1, got {rounds}, {delta}")
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(float(noise_multiplier)), int(rounds)))
    return float(accountant.get_epsilon(float(delta)))


def run_privacy_spend(cfg, delta: float = DEFAULT_RUN_DELTA) -> dict:
    """What one run spends of a dataset's privacy budget, from its run config: {"mechanism",
    "epsilon" (None: no DP guarantee), "delta", "rounds", "noise_multiplier", "clip_norm",
    "task", "note"}. Only a survival run with dp_enabled has a DP guarantee; synthetic generation
    and analyses release unnoised summaries (protected by the minimum-patients and small-cell
    rules, not by DP) and are recorded as spending no measurable epsilon, never as epsilon 0."""
    task = getattr(cfg, "task", "survival")
    if task == "survival" and cfg.dp_enabled:
        return {"mechanism": MECHANISM_DP_FEDAVG, "task": task, "rounds": int(cfg.num_rounds),
                "noise_multiplier": float(cfg.dp_noise_multiplier), "clip_norm": float(cfg.dp_clip_norm),
                "epsilon": dp_fedavg_epsilon(cfg.dp_noise_multiplier, cfg.num_rounds, delta), "delta": float(delta),
                "note": "node-level (epsilon, delta)-DP of the model weights, RDP accountant (dp-accounting)"}
    why = {"synthesis": "synthetic generation: the generators (CTGAN, Bayesian network, VAE-BGM) are not "
                        "differentially private",
           "analysis": "analysis: counts and sums released under the small-cell rule, not DP"}.get(
        task, "training without DP-FedAvg")
    return {"mechanism": MECHANISM_NONE, "task": task, "rounds": int(getattr(cfg, "num_rounds", 0) or 0),
            "noise_multiplier": None, "clip_norm": None, "epsilon": None, "delta": None,
            "note": f"no DP guarantee ({why})"}
