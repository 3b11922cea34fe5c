"""In-process simulation of the node/manager exchange for every generator.

Each step calls a ``node_*`` function per node (it sees only that node's rows and returns a
message: parameters, statistics) and a ``manager_*`` function (it sees only messages). The real
deployment carries the same messages over Flower; this module only sequences them.
"""
from __future__ import annotations

import logging
from typing import Callable

import pandas as pd

from .base import BaseGenerator
from .spec import TableSpec
from .transform import manager_merge_summaries, node_column_summaries

log = logging.getLogger("generative")

GENERATORS = ("ctgan", "bayesian_network", "vae_bgm", "sd_sharing", "sdv_ctgan")


def make_generator(kind: str, spec: TableSpec, **kwargs) -> BaseGenerator:
    """A generator by name: ctgan, bayesian_network, vae_bgm, sdv_ctgan."""
    # Each backend loads torch, sdv or pgmpy: imported when chosen (so for the other branches below).
    if kind == "ctgan":
        from .backends.ctgan import CTGANGenerator
        return CTGANGenerator(spec, **kwargs)
    if kind == "vae_bgm":
        from .backends.vae_bgm import VAEBGMGenerator
        return VAEBGMGenerator(spec, **kwargs)
    if kind == "bayesian_network":
        from .backends.bayesnet import BayesianNetworkGenerator
        return BayesianNetworkGenerator(spec, **kwargs)
    if kind == "sdv_ctgan":
        from .backends.sdv_ctgan import SDVCTGANGenerator
        return SDVCTGANGenerator(spec, **kwargs)
    raise ValueError(f"unknown generator {kind!r}; known: {', '.join(GENERATORS)}")


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

    Iterative generators (ctgan, vae_bgm) run ``rounds`` FedAvg rounds of ``local_epochs`` each
    and call ``on_round(r, generator)`` after round r = 1..rounds. The Bayesian network runs its
    two steps (structure votes, summed counts). sd_sharing needs ``holdouts`` (privacy gate) and
    optionally ``n_share`` rows per node (default: as many as its patients).
    """
    hyper = dict(hyper or {})
    if kind == "sd_sharing":
        # sd_sharing builds on make_generator above: a cycle inside generative, kept until the
        # generators register in one protocol (issue 14)
        from .sd_sharing import SyntheticPoolGenerator, manager_pool_synthetic, node_share_synthetic

        if holdouts is None:
            raise ValueError("sd_sharing: each node needs a holdout table for its privacy gate")
        base = hyper.pop("kind", "vae_bgm")
        shares = [node_share_synthetic(spec, df, ho, n_rows=(n_share[k] if n_share else len(df)), kind=base,
                                       hyper=hyper, thresholds=thresholds, seed=seed + k)
                  for k, (df, ho) in enumerate(zip(node_frames, holdouts))]
        if not any(s["passed"] for s in shares):
            detail = "; ".join(
                f"node {k}: " + ", ".join(f"{c['name']} {c['measured']:.3g} vs {c['threshold']}"
                                          for c in s["gate"]["checks"] if not c["passed"] and c["measured"] is not None)
                for k, s in enumerate(shares))
            raise ValueError(f"sd_sharing: no node passed its privacy gate ({detail})")
        g = SyntheticPoolGenerator(spec, seed=seed).fit(manager_pool_synthetic(shares, spec))
        g.fit_info["node_gates"] = [{"n": s["n"], "passed": s["passed"], "failed": s["gate"]["failed"]} for s in shares]
        return g

    summary = federated_summary(node_frames, spec, seed=seed)
    if kind == "bayesian_network":
        from .backends import bayesnet as bn

        g = bn.BayesianNetworkGenerator(spec, seed=seed, summary=summary, **hyper)
        structures = [bn.node_structure(spec, summary, df, n_bins=g.n_bins, max_indegree=g.max_indegree,
                                        method=g.structure_method, seed=seed + k)
                      for k, df in enumerate(node_frames)]
        edges = bn.manager_merge_structures(structures, spec.names, max_indegree=g.max_indegree)
        counts = bn.manager_counts([bn.node_family_counts(spec, summary, edges, df, n_bins=g.n_bins)
                                    for df in node_frames])
        g.set_parameters({"edges": edges, "counts": counts})
        g.fit_info["node_edges"] = [len(s["edges"]) for s in structures]
        return g

    if kind == "ctgan":
        from .backends.ctgan import CTGANGenerator, manager_fedavg, node_ctgan_round as node_round
        g = CTGANGenerator(spec, seed=seed, summary=summary, **hyper)
    elif kind == "vae_bgm":
        from .backends.vae_bgm import (VAEBGMGenerator, manager_fedavg, manager_latent_mixture,
                                       node_latent_mixture, node_vae_round as node_round)
        g = VAEBGMGenerator(spec, seed=seed, summary=summary, **hyper)
    else:
        raise ValueError(f"train_federated: unknown generator {kind!r}")
    hyper.pop("epochs", None)
    params = None
    for r in range(1, rounds + 1):
        updates = [node_round(spec, summary, params, df, local_epochs=local_epochs, seed=seed + 1000 * r + k, **hyper)
                   for k, df in enumerate(node_frames)]
        params = manager_fedavg(updates)
        g.set_parameters(params)
        if kind == "vae_bgm":
            g.set_mixture(manager_latent_mixture([
                node_latent_mixture(spec, summary, params, df, seed=seed + k, **hyper)
                for k, df in enumerate(node_frames)]))
        log.info("%s: federated round %d/%d done", kind, r, rounds)
        if on_round is not None:
            on_round(r, g)
    g.fit_info.update({"rounds": rounds, "local_epochs": local_epochs, "nodes": [len(df) for df in node_frames]})
    return g
