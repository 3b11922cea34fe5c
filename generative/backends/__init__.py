"""Generator backends, by name. Third-party objects (sdv, pgmpy) stay inside their module, which
imports them only when used: sdv_ctgan (the BUSL-licensed sdv reference, see its docstring) and
bayesnet's optional pgmpy search."""
from __future__ import annotations

from ..base import BaseGenerator
from ..spec import TableSpec
from .bayesnet import BayesianNetworkGenerator
from .ctgan import CTGANGenerator
from .sdv_ctgan import SDVCTGANGenerator
from .vae_bgm import VAEBGMGenerator

BACKENDS: dict[str, type[BaseGenerator]] = {
    cls.name: cls for cls in (CTGANGenerator, BayesianNetworkGenerator, VAEBGMGenerator, SDVCTGANGenerator)}


def make_generator(kind: str, spec: TableSpec, **kwargs) -> BaseGenerator:
    """A generator by name: ctgan, bayesian_network, vae_bgm, sdv_ctgan."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown generator {kind!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[kind](spec, **kwargs)
