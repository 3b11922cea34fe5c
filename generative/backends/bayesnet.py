"""Discrete Bayesian-network generator, trainable centralised or in two federated steps.

1. Structure: each node learns a DAG on its own discretised rows (BIC hill climbing with
   bounded in-degree: our fast add-only search, or pgmpy's HillClimbSearch) and sends only its edge list; the manager merges them by
   patient-weighted edge votes into one acyclic graph (``manager_merge_structures``).
2. Parameters: with the merged structure fixed, each node sends its family counts
   N(x_i, pa_i) (``node_family_counts``); the manager sums them (``manager_cpds``). Summed counts
   are the pooled counts, so the federated maximum-likelihood CPDs equal the pooled-data estimate
   exactly (BIC/BDeu and the ML estimator decompose over family counts).

Numeric columns are discretised with GLOBAL bins from the federated quantiles (every node bins
the same way); sampling draws a bin, then a value inside it from the federation's piecewise-linear
quantile function (which keeps point masses such as 0 % blasts). pgmpy objects stay in this
module.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from ..aggregation import sum_counts
from ..base import BaseGenerator, FederatedGenerator, Step
from ..spec import TableSpec
from ..transform import QUANTILE_PROBS, finish_numeric, from_model_scale, local_summary, to_model_scale

log = logging.getLogger("generative")


# ------------------------------------------------------------------ discretisation
def global_bins(spec: TableSpec, summary: dict, n_bins: int = 5) -> dict:
    """Bin edges per numeric column (model scale) from the global quantiles: {name: {"edges",
    "probs", "quantiles"}}; edges are the inner cut points, strictly inside the range."""
    out = {}
    inner_p = np.linspace(0, 1, n_bins + 1)[1:-1]
    for c in spec.of_kind("numeric"):
        q = np.asarray(summary["columns"][c.name]["quantiles"], dtype=float)
        q = np.maximum.accumulate(q)
        cut = np.unique(np.interp(inner_p, QUANTILE_PROBS, q))
        cut = cut[(cut > q[0]) & (cut < q[-1])]
        out[c.name] = {"edges": cut, "quantiles": q}
    return out


def cardinalities(spec: TableSpec, bins: dict) -> dict[str, int]:
    """Number of discrete states per column."""
    card = {}
    for c in spec.columns:
        if c.kind == "numeric":
            card[c.name] = len(bins[c.name]["edges"]) + 1
        elif c.kind == "binary":
            card[c.name] = 2
        else:
            card[c.name] = len(c.categories)
    return card


def discretise(spec: TableSpec, bins: dict, data: pd.DataFrame) -> pd.DataFrame:
    """Validated table -> integer state codes (n, p), same columns."""
    out = {}
    for c in spec.columns:
        v = data[c.name].to_numpy()
        if c.kind == "numeric":
            out[c.name] = np.searchsorted(bins[c.name]["edges"], to_model_scale(c, v), side="right")
        elif c.kind == "binary":
            out[c.name] = v.astype(np.int64)
        else:
            lookup = {k: i for i, k in enumerate(c.categories)}
            out[c.name] = np.array([lookup[x] for x in v], dtype=np.int64)
    return pd.DataFrame(out)


# ------------------------------------------------------------------ structure
def family_bic(child: np.ndarray, parents: list[np.ndarray], r: int, pcard: list[int]) -> float:
    """BIC of one family from integer codes (n,): log-likelihood at the ML estimate minus
    0.5 log(n) (r - 1) q (Schwarz 1978); decomposes over family counts."""
    n = len(child)
    q = int(np.prod(pcard)) if pcard else 1
    j = np.ravel_multi_index(parents, pcard) if parents else np.zeros(n, dtype=np.int64)
    m = np.bincount(j * r + child, minlength=q * r).reshape(q, r).astype(np.float64)
    tot = m.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = np.where(m > 0, m * np.log(m / np.where(tot > 0, tot, 1)), 0.0).sum()
    return float(ll - 0.5 * np.log(n) * (r - 1) * q)


def greedy_bic_structure(codes: pd.DataFrame, card: dict[str, int], *, max_indegree: int = 3) -> list[list[str]]:
    """Greedy hill climbing over edge additions with the BIC score: add the best-scoring
    acyclic edge until no addition improves BIC. Deltas are cached per child, so a search over
    p columns costs about p^2 + edges * p family scores."""
    names = list(codes.columns)
    x = {v: codes[v].to_numpy().astype(np.int64) for v in names}
    pa: dict[str, list[str]] = {v: [] for v in names}
    fam = {v: family_bic(x[v], [], card[v], []) for v in names}
    children: dict[str, set] = {v: set() for v in names}

    def delta(u, v):
        ps = pa[v] + [u]
        return family_bic(x[v], [x[p] for p in ps], card[v], [card[p] for p in ps]) - fam[v]

    cand = {(u, v): delta(u, v) for v in names for u in names if u != v}
    while cand:
        (u, v), best = max(cand.items(), key=lambda kv: kv[1])
        if best <= 1e-9:
            break
        del cand[(u, v)]
        if _has_path(children, v, u):  # adding u -> v would close a cycle, now and later
            continue
        pa[v].append(u)
        children[u].add(v)
        fam[v] += best
        cand.pop((v, u), None)
        for w in names:
            if (w, v) in cand:
                if len(pa[v]) >= max_indegree:
                    del cand[(w, v)]
                else:
                    cand[(w, v)] = delta(w, v)
    return sorted([[u, v] for v in names for u in pa[v]])


def learn_structure(codes: pd.DataFrame, card: dict[str, int], *, max_indegree: int = 3,
                    method: str = "greedy_bic", seed: int = 0) -> list[list[str]]:
    """DAG on integer codes (n, p) -> edge list [[parent, child], ...]. ``greedy_bic``: our
    add-only BIC hill climbing (fast); ``pgmpy_hc``: pgmpy HillClimbSearch with BIC (add,
    delete, reverse moves; slower)."""
    if method == "greedy_bic":
        return greedy_bic_structure(codes, card, max_indegree=max_indegree)
    if method != "pgmpy_hc":
        raise ValueError(f"bayesian network: unknown structure method {method!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pgmpy takes ~2 s to import and only this optional method needs it
        from pgmpy.estimators import HillClimbSearch

    logging.getLogger("pgmpy").setLevel(logging.ERROR)
    df = pd.DataFrame({k: pd.Categorical(codes[k], categories=list(range(card[k]))) for k in codes.columns})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dag = HillClimbSearch(df).estimate(scoring_method="bic-d", max_indegree=max_indegree,
                                           show_progress=False)
    return sorted([[str(u), str(v)] for u, v in dag.edges()])


def _has_path(adj: dict[str, set], src: str, dst: str) -> bool:
    stack, seen = [src], set()
    while stack:
        u = stack.pop()
        if u == dst:
            return True
        if u in seen:
            continue
        seen.add(u)
        stack.extend(adj[u])
    return False


def manager_merge_structures(structures: list[dict], names: list[str], *, threshold: float = 0.5,
                             max_indegree: int = 3) -> list[list[str]]:
    """Merge node DAGs {"n", "edges"} by patient-weighted votes: an (undirected) edge enters
    when its weighted support >= threshold, strongest first, oriented by the heavier direction,
    skipped (or reversed) when it would close a cycle or exceed the in-degree bound."""
    ns = np.array([s["n"] for s in structures], dtype=float)
    vote: dict[tuple[str, str], float] = {}
    for s, n in zip(structures, ns):
        for u, v in s["edges"]:
            vote[(u, v)] = vote.get((u, v), 0.0) + n / ns.sum()
    order = {n: i for i, n in enumerate(names)}
    pairs = {}
    for (u, v), w in vote.items():
        key = tuple(sorted((u, v), key=order.get))
        pairs[key] = pairs.get(key, 0.0) + w
    adj = {n: set() for n in names}
    indeg = {n: 0 for n in names}
    edges = []
    for (a, b), support in sorted(pairs.items(), key=lambda kv: (-kv[1], order[kv[0][0]], order[kv[0][1]])):
        if support < threshold:
            break
        first = (a, b) if vote.get((a, b), 0.0) >= vote.get((b, a), 0.0) else (b, a)
        for u, v in (first, first[::-1]):
            if indeg[v] < max_indegree and not _has_path(adj, v, u):
                adj[u].add(v)
                indeg[v] += 1
                edges.append([u, v])
                break
    return sorted(edges)


def parents_of(edges: list[list[str]], names: list[str]) -> dict[str, list[str]]:
    """Parents per node, in spec order."""
    order = {n: i for i, n in enumerate(names)}
    pa = {n: [] for n in names}
    for u, v in edges:
        pa[v].append(u)
    return {k: sorted(v, key=order.get) for k, v in pa.items()}


def topological_order(edges: list[list[str]], names: list[str]) -> list[str]:
    pa = parents_of(edges, names)
    done, out = set(), []
    while len(out) < len(names):
        progressed = False
        for n in names:
            if n not in done and all(p in done for p in pa[n]):
                done.add(n)
                out.append(n)
                progressed = True
        if not progressed:
            raise ValueError("bayesian network: the structure has a cycle")
    return out


# ------------------------------------------------------------------ parameters
def family_counts(codes: pd.DataFrame, edges: list[list[str]], card: dict[str, int]) -> dict[str, np.ndarray]:
    """Counts N(x_i = s, pa_i = j) per variable: {name: int64 (card_i, prod card_pa)}; parent
    configurations in C order over the parents in spec order."""
    names = list(codes.columns)
    pa = parents_of(edges, names)
    out = {}
    for v in names:
        ps = pa[v]
        pcard = [card[p] for p in ps]
        j = np.ravel_multi_index([codes[p].to_numpy() for p in ps], pcard) if ps else np.zeros(len(codes), dtype=np.int64)
        m = np.zeros((card[v], int(np.prod(pcard)) if ps else 1), dtype=np.int64)
        np.add.at(m, (codes[v].to_numpy(), j), 1)
        out[v] = m
    return out


def cpds_from_counts(counts: dict[str, np.ndarray], alpha: float = 0.0) -> dict[str, np.ndarray]:
    """Conditional probability tables P(x_i | pa_i) (card_i, n_configs) from counts plus a
    Dirichlet pseudo-count alpha per cell; unseen parent configurations get the uniform law."""
    out = {}
    for v, m in counts.items():
        m = m.astype(np.float64) + alpha
        tot = m.sum(0, keepdims=True)
        out[v] = np.where(tot > 0, m / np.where(tot > 0, tot, 1), 1.0 / m.shape[0])
    return out


class BayesianNetworkGenerator(BaseGenerator):
    """Discrete Bayesian network over globally binned columns. Parameters are sufficient
    statistics: {"edges", "counts"}."""

    name = "bayesian_network"
    iterative = False

    def __init__(self, spec: TableSpec, *, seed: int = 0, n_bins: int = 5, max_indegree: int = 3,
                 alpha: float = 0.5, structure_method: str = "greedy_bic", summary: dict | None = None):
        super().__init__(spec, seed=seed)
        self.n_bins, self.max_indegree, self.alpha = int(n_bins), int(max_indegree), float(alpha)
        self.structure_method = structure_method
        self.summary = None
        if summary is not None:
            self.setup(summary)

    def setup(self, summary: dict) -> None:
        self.summary = summary
        self.bins = global_bins(self.spec, summary, self.n_bins)
        self.card = cardinalities(self.spec, self.bins)

    def codes(self, data: pd.DataFrame) -> pd.DataFrame:
        return discretise(self.spec, self.bins, data)

    def _fit(self, data: pd.DataFrame) -> None:
        if self.summary is None:
            self.setup(local_summary(data, self.spec, seed=self.seed))
        codes = self.codes(data)
        edges = learn_structure(codes, self.card, max_indegree=self.max_indegree,
                                method=self.structure_method, seed=self.seed)
        self._set_parameters({"edges": edges, "counts": family_counts(codes, edges, self.card)})

    def _set_parameters(self, params: dict) -> None:
        if self.summary is None:
            raise RuntimeError("bayesian_network: call setup(global_summary) before set_parameters()")
        self.edges = [list(e) for e in params["edges"]]
        self.counts = {k: np.asarray(v) for k, v in params["counts"].items()}
        self.cpds = cpds_from_counts(self.counts, self.alpha)
        self.parents = parents_of(self.edges, self.spec.names)
        self.order = topological_order(self.edges, self.spec.names)

    def _get_parameters(self) -> dict:
        return {"edges": [list(e) for e in self.edges], "counts": dict(self.counts)}

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        codes = {}
        for v in self.order:
            ps = self.parents[v]
            j = np.ravel_multi_index([codes[p] for p in ps], [self.card[p] for p in ps]) if ps else np.zeros(n, dtype=np.int64)
            p = self.cpds[v][:, j].T
            codes[v] = (p.cumsum(1) < rng.random((n, 1))).sum(1).clip(0, p.shape[1] - 1)
        out = {}
        for c in self.spec.columns:
            k = codes[c.name]
            if c.kind == "numeric":
                out[c.name] = self._decode_numeric(c, k, rng)
            elif c.kind == "binary":
                out[c.name] = k.astype(np.int64)
            else:
                out[c.name] = np.asarray(c.categories, dtype=object)[k]
        return pd.DataFrame(out)

    def _decode_numeric(self, c, k, rng):
        b = self.bins[c.name]
        q, edges = b["quantiles"], b["edges"]
        lo = np.concatenate([[q[0]], edges])
        hi = np.concatenate([edges, [q[-1]]])
        # probability range of each bin under the piecewise-linear global quantile function
        p_lo = np.interp(lo, q, QUANTILE_PROBS, left=0.0, right=1.0) if np.all(np.diff(q) > 0) else _inv_q(q, lo, "lo")
        p_hi = np.interp(hi, q, QUANTILE_PROBS, left=0.0, right=1.0) if np.all(np.diff(q) > 0) else _inv_q(q, hi, "hi")
        u = p_lo[k] + (p_hi[k] - p_lo[k]) * rng.random(len(k))
        z = np.interp(u, QUANTILE_PROBS, q)
        z = np.clip(z, lo[k], hi[k])
        return finish_numeric(c, self.summary["columns"][c.name], from_model_scale(c, z))


def _inv_q(q: np.ndarray, x: np.ndarray, side: str) -> np.ndarray:
    """Probability range ends of values x under a quantile function with flat pieces (atoms):
    'lo' -> first probability where Q reaches x, 'hi' -> last probability where Q <= x."""
    out = np.empty(len(x))
    for i, xi in enumerate(x):
        if side == "lo":
            j = np.searchsorted(q, xi, side="left")
            if j == 0:
                out[i] = 0.0
            elif j >= len(q):
                out[i] = 1.0
            else:
                out[i] = np.interp(xi, q[j - 1:j + 1], QUANTILE_PROBS[j - 1:j + 1]) if q[j] > q[j - 1] else QUANTILE_PROBS[j]
        else:
            j = np.searchsorted(q, xi, side="right")
            if j >= len(q):
                out[i] = 1.0
            elif j == 0:
                out[i] = 0.0
            else:
                out[i] = np.interp(xi, q[j - 1:j + 1], QUANTILE_PROBS[j - 1:j + 1]) if q[j] > q[j - 1] else QUANTILE_PROBS[j - 1]
    return out


# ------------------------------------------------------------------ federated protocol
def node_structure(spec: TableSpec, summary: dict, df: pd.DataFrame, *, n_bins: int = 5,
                   max_indegree: int = 3, method: str = "greedy_bic", seed: int = 0) -> dict:
    """Node side, step 1: {"n", "edges"} learnt on own rows with the global bins."""
    g = BayesianNetworkGenerator(spec, seed=seed, n_bins=n_bins, max_indegree=max_indegree, summary=summary)
    data = spec.validate(df, where="node_structure")
    return {"n": len(data), "edges": learn_structure(g.codes(data), g.card, max_indegree=max_indegree,
                                                     method=method, seed=seed)}


def node_family_counts(spec: TableSpec, summary: dict, edges: list[list[str]], df: pd.DataFrame, *,
                       n_bins: int = 5) -> dict:
    """Node side, step 2: {"n", "counts": {name: (card, n_configs)}} for the merged structure."""
    g = BayesianNetworkGenerator(spec, n_bins=n_bins, summary=summary)
    data = spec.validate(df, where="node_family_counts")
    return {"n": len(data), "counts": family_counts(g.codes(data), edges, g.card)}


def manager_counts(messages: list[dict]) -> dict[str, np.ndarray]:
    """Manager side: summed family counts (= pooled counts)."""
    return sum_counts([m["counts"] for m in messages])


class BayesianNetworkFederation(FederatedGenerator):
    """The Bayesian network across nodes, in one round of two steps: each node learns a
    structure on its own rows ("structure": {"n", "edges"}), the manager merges them by
    patient-weighted votes; then each node counts its families in the merged structure
    ("counts": {"n", "counts"}) and the manager sums the counts (= the pooled counts)."""

    name = "bayesian_network"
    backend = BayesianNetworkGenerator

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.edges: list[list[str]] | None = None  # merged structure, on the manager

    def steps(self) -> tuple[Step, ...]:
        return (Step("structure", "network structure", self._summary_request, self._node_structure, self._merge),
                Step("counts", "family counts", self._edges_request, self._node_counts, self._sum_counts),
                self.alone_step())

    def _summary_request(self, sizes: dict[str, int], n_rows: int) -> tuple[dict, dict[str, dict]]:
        return {"summary": self.summary}, {}

    def _edges_request(self, sizes: dict[str, int], n_rows: int) -> tuple[dict, dict[str, dict]]:
        return {"summary": self.summary, "edges": self.edges}, {}

    def _node_structure(self, message: dict, train: pd.DataFrame, holdout, seed: int) -> dict:
        g = self.build(0)  # the hyper-parameters' bins, in-degree bound and search method
        return node_structure(self.spec, self.summary, train, n_bins=g.n_bins, max_indegree=g.max_indegree,
                              method=g.structure_method, seed=seed)

    def _merge(self, answers: dict[str, dict]) -> None:
        self.edges = manager_merge_structures(list(answers.values()), self.spec.names,
                                              max_indegree=self.model.max_indegree)
        self.model.fit_info["node_edges"] = [len(a["edges"]) for a in answers.values()]

    def _node_counts(self, message: dict, train: pd.DataFrame, holdout, seed: int) -> dict:
        return node_family_counts(self.spec, self.summary, message["edges"], train, n_bins=self.build(0).n_bins)

    def _sum_counts(self, answers: dict[str, dict]) -> None:
        self.model.set_parameters({"edges": self.edges, "counts": manager_counts(list(answers.values()))})
