"""Adapter to the sdv ``CTGANSynthesizer``: the centralised CTGAN reference.

Licence: sdv (and its ctgan/rdt dependencies) is published under the Business Source License 1.1
(BUSL-1.1), not an open-source licence: research and non-production use are allowed, production
use needs a licence from DataCebo. FedHaem's own federated CTGAN (``generative.backends.ctgan``)
does not depend on sdv; this adapter exists only to compare against the reference implementation
and is imported lazily, so FedHaem runs without sdv installed. See README.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..base import BaseGenerator
from ..spec import TableSpec

LICENCE = "BUSL-1.1 (sdv by DataCebo): research / non-production use only"


class SDVCTGANGenerator(BaseGenerator):
    """sdv CTGAN behind the FedHaem interface (centralised only; no FedAvg parameters)."""

    name = "sdv_ctgan"
    iterative = False

    def __init__(self, spec: TableSpec, *, seed: int = 0, epochs: int = 100, batch_size: int = 500,
                 pac: int = 10):
        super().__init__(spec, seed=seed)
        self.epochs, self.batch_size, self.pac = int(epochs), int(batch_size), int(pac)

    def _metadata(self):
        from sdv.metadata import Metadata

        cols = {c.name: {"sdtype": "numerical" if c.kind == "numeric" else "categorical"}
                for c in self.spec.columns}
        return Metadata.load_from_dict({"tables": {"cohort": {"columns": cols}}})

    def _fit(self, data: pd.DataFrame) -> None:
        import torch
        from sdv.single_table import CTGANSynthesizer

        torch.manual_seed(self.seed)
        np.random.seed(self.seed)  # sdv draws from the global numpy generator
        self._model = CTGANSynthesizer(self._metadata(), epochs=self.epochs, batch_size=self.batch_size,
                                       pac=self.pac, enable_gpu=False)
        frame = data.copy()
        for c in self.spec.of_kind("binary"):
            frame[c.name] = frame[c.name].astype(str)
        self._model.fit({"cohort": frame})

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        import torch

        torch.manual_seed(int(rng.integers(2**31)))
        np.random.seed(int(rng.integers(2**31)))
        out = self._model.sample(n)
        out = out["cohort"] if isinstance(out, dict) else out
        for c in self.spec.of_kind("binary"):
            out[c.name] = out[c.name].astype(int)
        for c in self.spec.of_kind("numeric"):
            lo = c.minimum if c.minimum is not None else -np.inf
            hi = c.maximum if c.maximum is not None else np.inf
            out[c.name] = np.clip(out[c.name].astype(float), lo, hi)
        return out.reset_index(drop=True)
