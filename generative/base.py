"""The generator interface (SDV's template): public ``fit``/``sample`` validate and log, each
backend implements ``_fit``/``_sample``; and its federated counterpart, `FederatedGenerator`:
the node-side and manager-side steps one generator needs to train across nodes, exchanged as
messages (parameters for weighted FedAvg, or sufficient statistics that are summed)."""
from __future__ import annotations

import inspect
import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from .aggregation import weighted_fedavg
from .safe import node_own_scores
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


def check_hyper(backend: type[BaseGenerator], params: dict) -> dict:
    """Validated hyper-parameters of a backend: keyword-only constructor arguments (not seed or
    summary), positive numbers below a ceiling; raises ValueError naming the bad key."""
    sig = inspect.signature(backend.__init__)
    allowed = {k for k, p in sig.parameters.items()
               if p.kind == p.KEYWORD_ONLY and k not in ("seed", "summary")}
    bad = sorted(set(params) - allowed)
    if bad:
        raise ValueError(f"generator_params: unknown key(s) {bad} for {backend.name}; known: {sorted(allowed)}")
    for k, v in params.items():
        default = sig.parameters[k].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 \
                    and k not in ("weight_decay", "alpha"):
                raise ValueError(f"generator_params: {k}={v!r} must be a positive number")
            if isinstance(default, int) and float(v) != int(v):
                raise ValueError(f"generator_params: {k}={v!r} must be an integer")
            # A generous ceiling (100 times the default) refuses sizes that would exhaust a
            # hospital's node (hidden=10^9) while leaving every sensible setting open.
            ceiling = max(abs(default) * 100, 1.0)
            if v > ceiling:
                raise ValueError(f"generator_params: {k}={v!r} is above its ceiling of {ceiling:g}")
    return dict(params)


# ================================================================== federated training
@dataclass(frozen=True)
class Step:
    """One message exchange in a round of federated training.

    On the manager ``request(sizes, n_rows)`` gives (the message every node gets, extras by node
    name); ``sizes`` are the nodes' patients, ``n_rows`` the rows of the cohort wanted. On each
    node ``node(message, train, holdout, seed)`` answers from that node's rows only. On the
    manager ``aggregate(answers)`` folds the answers ({node name: answer}, in name order) into
    the global generator. A ``baseline`` step trains each node's generator on its own rows, to
    compare with (no part of the federated generator). ``label`` says what the step does."""

    name: str
    label: str
    request: Callable[[dict[str, int], int], tuple[dict, dict[str, dict]]]
    node: Callable[[dict, pd.DataFrame, pd.DataFrame | None, int], dict]
    aggregate: Callable[[dict[str, dict]], None]
    baseline: bool = False


class FederatedGenerator(ABC):
    """How one generator trains across nodes. Built from the same public inputs on the manager
    and on every node: the spec, the global column summary (``generative.transform``), the
    hyper-parameters, local epochs per round and the run's seed. Nodes keep no state between
    messages, so every message carries what a node needs (the summary, global parameters).

    A round is ``steps()`` in order; ``iterative`` generators run several rounds (FedAvg), the
    others one. The manager calls ``start()`` first; after each round ``generator()`` samples
    (at most ``sample_size(n)`` rows). Messages are dicts of numpy arrays and JSON values.
    """

    name: ClassVar[str]
    backend: ClassVar[type[BaseGenerator] | None] = None
    iterative: ClassVar[bool] = False
    uses_summary: ClassVar[bool] = True  # needs the global column summary

    def __init__(self, spec: TableSpec, summary: dict | None = None, *, hyper: dict | None = None,
                 local_epochs: int = 1, seed: int = 0, thresholds=None):
        """``thresholds``: the privacy gate a node applies before synthetic rows leave it (for
        generators that share rows; ``generative.gate`` defaults when None)."""
        self.spec, self.summary = spec, summary
        self.hyper = dict(hyper or {})
        self.local_epochs, self.seed = int(local_epochs), int(seed)
        self.thresholds = thresholds
        self.model: BaseGenerator | None = None  # the global generator, on the manager

    @classmethod
    def check_hyper(cls, params: dict) -> dict:
        """Validated hyper-parameters (ValueError naming the bad key)."""
        return check_hyper(cls.backend, params)

    def build(self, seed: int) -> BaseGenerator:
        """A fresh backend generator on the global summary (weights initialised from ``seed``)."""
        return self.backend(self.spec, seed=seed, summary=self.summary, **self.hyper)

    def start(self, common_start: bool = True) -> None:
        """Manager side, before the first round: the global generator. ``common_start``
        (iterative generators): every node starts from the same seeded parameters, else each
        from its own seeded initialisation."""
        self.model = self.build(self.seed)

    def rounds(self, num_rounds: int) -> int:
        return num_rounds if self.iterative else 1

    @abstractmethod
    def steps(self) -> tuple[Step, ...]:
        """The steps of one round, in order."""

    def step(self, name: str) -> Step:
        steps = self.steps()
        for s in steps:
            if s.name == name:
                return s
        raise ValueError(f"generator {self.name!r} has no step {name!r}; its steps: "
                         f"{', '.join(s.name for s in steps)}")

    def generator(self) -> BaseGenerator:
        """The global generator after the round's steps (manager side)."""
        if self.model is None:
            raise NotFittedError(f"{self.name}: no global generator yet (start() and a round first)")
        return self.model

    def sample_size(self, n: int) -> int:
        """Rows the global generator can give of ``n`` wanted."""
        return n

    # ----- the node-alone baseline: this node's generator trained on its own rows only
    def alone_step(self) -> Step:
        return Step("alone", "nodes alone", self._alone_request, self._node_alone, self._keep_alone,
                    baseline=True)

    def train_alone(self, params: dict | None, train: pd.DataFrame, seed: int) -> tuple[BaseGenerator, dict | None]:
        """(this node's generator trained on ``train`` alone, parameters to hand back next round
        or None)."""
        return self.build(seed).fit(train), None

    def _alone_request(self, sizes: dict[str, int], n_rows: int) -> tuple[dict, dict[str, dict]]:
        return {"summary": self.summary}, {}

    def _node_alone(self, message: dict, train: pd.DataFrame, holdout: pd.DataFrame | None, seed: int) -> dict:
        """{"params": parameters or None, "scores": CSF, GSF, NNDR p5 against own patients}."""
        g, params = self.train_alone(message.get("params"), train, seed)
        syn = g.sample(len(train), seed=seed + 1)
        return {"params": params, "scores": node_own_scores(syn, train, holdout, self.spec, seed)}

    def _keep_alone(self, answers: dict[str, dict]) -> None:
        pass


class FedAvgFederation(FederatedGenerator):
    """A neural generator trained by FedAvg (McMahan et al. 2017): each round every node trains
    the global parameters for ``local_epochs`` on its own rows ("round": {"n", "params"}) and
    the manager averages them weighted by patients. Nodes alone keep training their own copy
    from round to round (its parameters travel back with the next request)."""

    iterative = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params: dict | None = None  # global parameters, on the manager
        self.alone_params: dict[str, dict] = {}  # each node's own parameters, on the manager
        self.rounds_done = 0

    @property
    def round_hyper(self) -> dict:
        """Hyper-parameters of one round (``local_epochs`` replace the centralised ``epochs``)."""
        return {k: v for k, v in self.hyper.items() if k != "epochs"}

    @abstractmethod
    def train_round(self, params: dict | None, train: pd.DataFrame, seed: int) -> dict:
        """Node side: the backend's round from ``params`` on ``train`` -> {"n", "params"}."""

    def finish_alone(self, g: BaseGenerator, data: pd.DataFrame, seed: int) -> None:
        """What a node alone adds after local training (nothing by default)."""

    def initial_parameters(self) -> dict:
        """Seeded initial parameters of the global generator (an untrained one: get_parameters
        refuses before fit)."""
        return self.build(self.seed)._get_parameters()

    def start(self, common_start: bool = True) -> None:
        super().start()
        self.params = self.initial_parameters() if common_start else None

    def round_step(self) -> Step:
        return Step("round", "training", self._params_request, self._node_round, self._fedavg)

    def _params_request(self, sizes: dict[str, int], n_rows: int) -> tuple[dict, dict[str, dict]]:
        return {"summary": self.summary, "params": self.params}, {}

    def _node_round(self, message: dict, train: pd.DataFrame, holdout, seed: int) -> dict:
        return self.train_round(message["params"], train, seed)

    def _fedavg(self, answers: dict[str, dict]) -> None:
        avg = weighted_fedavg([a["params"] for a in answers.values()], [a["n"] for a in answers.values()])
        # np.asarray: FedAvg of a 0-d counter gives a numpy scalar; keep it an array
        self.params = {k: np.asarray(v) for k, v in avg.items()}
        self.model.set_parameters(self.params)
        self.rounds_done += 1

    def _alone_request(self, sizes: dict[str, int], n_rows: int) -> tuple[dict, dict[str, dict]]:
        init = self.initial_parameters() if self.rounds_done == 1 else None
        return {"summary": self.summary}, {n: {"params": self.alone_params.get(n, init)} for n in sizes}

    def train_alone(self, params: dict | None, train: pd.DataFrame, seed: int) -> tuple[BaseGenerator, dict]:
        g = self.build(seed)
        if params is not None:
            g.set_parameters(params)
        data = self.spec.validate(train, where="node alone")
        g.train_local(data, self.local_epochs, seed)
        self.finish_alone(g, data, seed)
        return g, g.get_parameters()

    def _keep_alone(self, answers: dict[str, dict]) -> None:
        for n, a in answers.items():
            if a.get("params") is not None:
                self.alone_params[n] = a["params"]
