"""The generator interface (SDV's template): public ``fit``/``sample`` validate and log, each
backend implements ``_fit``/``_sample``; federated training goes through
``get_parameters``/``set_parameters`` (weighted FedAvg) or sufficient statistics (summed)."""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd

from .spec import SpecError, TableSpec

log = logging.getLogger("generative")


class NotFittedError(RuntimeError):
    pass


class BaseGenerator(ABC):
    """A synthetic-data generator over a :class:`TableSpec`.

    ``fit(df)`` learns from one table (centralised, or one node alone); ``sample(n)`` returns n
    rows with the spec's columns and dtypes. Federated training uses the backend module's
    ``node_*``/``manager_*`` functions and ends with ``set_parameters``.
    """

    name: str = "base"
    iterative: bool = False  # trained in rounds (FedAvg); each round can emit a sample

    def __init__(self, spec: TableSpec, *, seed: int = 0):
        if not isinstance(spec, TableSpec):
            raise TypeError(f"{type(self).__name__}: spec must be a TableSpec, got {type(spec).__name__}")
        self.spec = spec
        self.seed = int(seed)
        self._fitted = False
        self.fit_info: dict = {}

    # ----- public template
    def fit(self, df: pd.DataFrame) -> "BaseGenerator":
        """Validate ``df`` (n rows, spec columns) against the spec, then train; returns self."""
        data = self.spec.validate(df, where=f"{self.name}.fit")
        if len(data) < 10:
            raise SpecError(f"{self.name}.fit: {len(data)} rows; need at least 10")
        t0 = time.perf_counter()
        log.info("%s: fitting on %d rows x %d columns", self.name, len(data), data.shape[1])
        self._fit(data)
        self._fitted = True
        self.fit_info["fit_seconds"] = time.perf_counter() - t0
        self.fit_info["n_train"] = len(data)
        log.info("%s: fitted in %.1f s", self.name, self.fit_info["fit_seconds"])
        return self

    def sample(self, n: int, seed: int | None = None) -> pd.DataFrame:
        """n synthetic rows (spec columns, canonical dtypes)."""
        if not self._fitted:
            raise NotFittedError(f"{self.name}: call fit() or set_parameters() before sample()")
        n = int(n)
        if n <= 0:
            raise ValueError(f"{self.name}.sample: n must be positive, got {n}")
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        out = self._sample(n, rng)
        return self.spec.validate(out[self.spec.names], where=f"{self.name}.sample output")

    def get_parameters(self) -> dict:
        """The trained state as a message: {name: numpy array or JSON value}."""
        if not self._fitted:
            raise NotFittedError(f"{self.name}: nothing to export before fit()")
        return self._get_parameters()

    def set_parameters(self, params: dict) -> "BaseGenerator":
        """Load a state produced by ``get_parameters`` or by the manager's aggregation."""
        self._set_parameters(params)
        self._fitted = True
        return self

    # ----- backend hooks
    @abstractmethod
    def _fit(self, data: pd.DataFrame) -> None: ...

    @abstractmethod
    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame: ...

    def _get_parameters(self) -> dict:
        raise NotImplementedError(f"{self.name} does not export parameters")

    def _set_parameters(self, params: dict) -> None:
        raise NotImplementedError(f"{self.name} does not import parameters")
