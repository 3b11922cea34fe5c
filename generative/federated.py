"""Federated generators by name, and an in-process simulation of their node/manager exchange.

Each generator's federated training is a `FederatedGenerator` (``generative.base``): the steps
of a round, each a ``node`` function (it sees only that node's rows and returns a message:
parameters, statistics) and an ``aggregate`` function on the manager (it sees only messages).
The real deployment carries the same messages over Flower (``fl_engine.federation.synthesis``);
`train_federated` only sequences them in one process.
"""
from __future__ import annotations

import logging
from typing import Callable

import pandas as pd

from .backends import make_generator
from .backends.bayesnet import BayesianNetworkFederation
from .backends.ctgan import CTGANFederation
from .backends.vae_bgm import VAEBGMFederation
from .base import BaseGenerator, FederatedGenerator
from .sd_sharing import SDSharingFederation
from .spec import TableSpec
from .transform import manager_merge_summaries, node_column_summaries

log = logging.getLogger("generative")

__all__ = ["FEDERATED", "GENERATORS", "federated_class", "federated_generator", "federated_summary",
           "make_generator", "train_federated"]

GENERATORS = ("ctgan", "bayesian_network", "vae_bgm", "sd_sharing", "sdv_ctgan")
# Generators that train across nodes (sdv_ctgan is the centralised reference only).
FEDERATED: dict[str, type[FederatedGenerator]] = {
    cls.name: cls for cls in (VAEBGMFederation, BayesianNetworkFederation, CTGANFederation, SDSharingFederation)}


def federated_class(kind: str) -> type[FederatedGenerator]:
    """The federated form of generator ``kind`` (ValueError naming the known ones)."""
    if kind not in FEDERATED:
        raise ValueError(f"generator {kind!r} is not one of {', '.join(FEDERATED)}")
    return FEDERATED[kind]


def federated_generator(kind: str, spec: TableSpec, summary: dict | None = None, **kwargs) -> FederatedGenerator:
    """Generator ``kind``'s federated training on ``spec`` and the global ``summary``; keywords:
    hyper, local_epochs, seed, thresholds (see FederatedGenerator)."""
    return federated_class(kind)(spec, summary, **kwargs)


def federated_summary(node_frames: list[pd.DataFrame], spec: TableSpec, *, seed: int = 0) -> dict:
    """Setup step shared by all generators: node column summaries -> global summary."""
    return manager_merge_summaries([node_column_summaries(df, spec, seed=seed + k)
                                    for k, df in enumerate(node_frames)], spec, seed=seed)


def train_federated(kind: str, node_frames: list[pd.DataFrame], spec: TableSpec, *, rounds: int = 5,
                    local_epochs: int = 10, seed: int = 0, hyper: dict | None = None,
                    on_round: Callable[[int, BaseGenerator], None] | None = None,
                    holdouts: list[pd.DataFrame] | None = None, n_share: list[int] | None = None,
                    thresholds=None) -> BaseGenerator:
    """Train ``kind`` over K nodes (each a validated-able table) and return the global generator.

    Iterative generators (ctgan, vae_bgm) run ``rounds`` FedAvg rounds of ``local_epochs`` each,
    every node starting from its own seeded initialisation; the others run their one round.
    ``on_round(r, generator)`` is called after round r. sd_sharing needs ``holdouts`` (privacy
    gate, ``thresholds``) and optionally ``n_share`` rows per node (default: as many as its
    patients). The nodes-alone baseline steps are not run.
    """
    cls = federated_class(kind)
    summary = federated_summary(node_frames, spec, seed=seed) if cls.uses_summary else None
    fed = cls(spec, summary, hyper=hyper, local_epochs=local_epochs, seed=seed, thresholds=thresholds)
    names = [f"node {k}" for k in range(len(node_frames))]
    frames = dict(zip(names, node_frames))
    holds = dict(zip(names, holdouts or [None] * len(names)))
    sizes = {n: (n_share[k] if n_share else len(frames[n])) for k, n in enumerate(names)}
    fed.start(common_start=False)
    n_rounds = fed.rounds(rounds)
    for r in range(1, n_rounds + 1):
        for step in fed.steps():
            if step.baseline:
                continue
            message, extras = step.request(sizes, sum(sizes.values()))
            # the seeds this simulation has always used: per round for training, per node otherwise
            step.aggregate({n: step.node({**message, **extras.get(n, {})}, frames[n], holds[n],
                                         seed + 1000 * r + k if step.name == "round" else seed + k)
                            for k, n in enumerate(names)})
        log.info("%s: federated round %d/%d done", kind, r, n_rounds)
        if on_round is not None:
            on_round(r, fed.generator())
    g = fed.generator()
    g.fit_info.update({"rounds": n_rounds, "local_epochs": local_epochs, "nodes": [len(df) for df in node_frames]})
    return g
