"""Federated synthetic-cohort generation over the same Transport as survival studies.

Manager side: `run_synthesis(cfg, transport, sink)`. Node side: `handle_synth_request` (called by
`core.handle_request` for every ``synth_*`` kind), and `check_synth_reply_privacy` (called by
`core.check_reply_privacy`), which states what may leave a node: column summaries, generator
parameters, sufficient statistics (counts), SAFE aggregates (counts, sums, histograms) and scalar
scores. No patient row leaves a node; the only rows that travel are synthetic: from manager to
nodes (to be validated there) and, for sd_sharing, gated shares from nodes to the manager.

Protocol (generators `vae_bgm`, `ctgan`: iterative; `bayesian_network`: two steps, one "round"):
  synth_summary    node column summaries -> one global summary (generative.transform)
  synth_round      local epochs of the global generator from the global parameters
  synth_mixture    (vae_bgm) latent Gaussian mixture of the node's patients
  synth_structure  (bayesian_network) structure learnt on the node's patients
  synth_counts     (bayesian_network) family counts for the merged structure
  synth_validate   SAFE node_validate of a synthetic cohort against the node's own patients
  synth_alone      the node alone: a generator of the same kind, same global encoding, trained
                   on its own patients only; returns its scores (and, for iterative kinds, its
                   parameters, to be handed back next round: nodes keep no state between
                   messages, and these are parameters like every FedAvg update a node sends)
Each round the manager samples a cohort from the FedAvg'd generator, every node validates it and
the pooled CSF / GSF / NNDR p5 go to `sink.round` (global and per node, plus `alone_*` per node).

Synthetic-data sharing (`sd_sharing`, one round): after the summaries (node sizes only are used)
  synth_share      the node trains a generator of the base kind (generator_params "kind",
                   default vae_bgm) on its own patients, samples its share of the rows, runs ITS
                   OWN privacy gate (generative.gate, strict defaults) against its own holdout and
                   replies with the rows only if the gate passed (categories as integer codes
                   into the spec's categories), always with the gate as scalars (gate_passed,
                   gate_<check> measured, gate_<check>_threshold)
The manager pools the passing shares (generative.sd_sharing), then synth_validate as above. These
are the only rows that leave a node: synthetic, gated by the node, of the spec's columns, at most
as many as the manager asked for (check_synth_reply_privacy, given the request).
At the end the final cohort (synthetic.csv), the pooled SAFE report and the gate
(generative.gate) are written to cfg.model_dir (synthesis.json).

Node tables are the ML-ready registry tables; the generated columns are cfg.features (default:
the core clinical, cytogenetic and genomic columns of the use case) plus the endpoint's
months/event columns; rows with a missing value in them are left out (complete cases; counted).
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import FederationError, NodeReply, NodeRequest, split_holdout
from fedhaem_kernel.schema import get_schema

log = logging.getLogger("fedhaem.federation")

SYNTH_KINDS = ("synth_summary", "synth_round", "synth_mixture", "synth_structure", "synth_counts",
               "synth_validate", "synth_alone", "synth_share")
SYNTH_GENERATORS = ("vae_bgm", "bayesian_network", "ctgan", "sd_sharing")
ITERATIVE = ("vae_bgm", "ctgan")
SHARE_BASES = ("vae_bgm", "bayesian_network", "ctgan")  # generators a node may train for sd_sharing

# Default generated columns of MDS (the set the benchmark bench/synthetic_mds.py uses).
_MDS_GENES = ("SF3B1", "TET2", "ASXL1", "SRSF2", "DNMT3A", "RUNX1", "U2AF1", "TP53", "EZH2", "ZRSR2",
              "STAG2", "IDH2", "CBL", "NRAS", "BCOR", "NF1", "CUX1", "ETV6", "KRAS", "PHF6", "IDH1",
              "JAK2", "MLL_PTD", "SETBP1")
DEFAULT_COLUMNS = {
    "MDS": ("age", "sex", "hb", "plt", "anc", "wbc", "bm_blast", "pb_blast", "cyto_ipssr", "complex",
            "del5q", "del7_7q", "del17_17p", "del20q", "plus8") + _MDS_GENES,
}
# Right-skewed labs (and survival times) are modelled as log1p(x - minimum).
LOG_COLUMNS = ("plt", "anc", "wbc", "bm_blast", "pb_blast", "ldh", "ferritin", "crp")
QUASI_IDENTIFIERS = ("age", "sex", "cyto_ipssr")
MIN_ROWS = 20  # complete training rows a node needs to take part


# --- configuration ------------------------------------------------------------------------

def generator_hyper(kind: str, params: dict) -> dict:
    """Validated generator hyper-parameters (constructor keywords of the backend); raises
    ValueError naming the bad key."""
    if kind not in SYNTH_GENERATORS:
        raise ValueError(f"generator {kind!r} is not one of {', '.join(SYNTH_GENERATORS)}")
    if kind == "sd_sharing":  # {"kind": base generator, **its hyper-parameters}
        base = params.get("kind", "vae_bgm")
        if base not in SHARE_BASES:
            raise ValueError(f"generator_params: kind={base!r} must be one of {', '.join(SHARE_BASES)} "
                             "(the generator each node trains for sd_sharing)")
        return {"kind": base, **generator_hyper(base, {k: v for k, v in params.items() if k != "kind"})}
    from generative.federated import make_generator  # noqa: F401  (backends import lazily)
    if kind == "vae_bgm":
        from generative.backends.vae_bgm import VAEBGMGenerator as cls
    elif kind == "ctgan":
        from generative.backends.ctgan import CTGANGenerator as cls
    else:
        from generative.backends.bayesnet import BayesianNetworkGenerator as cls
    sig = inspect.signature(cls.__init__)
    allowed = {k for k, p in sig.parameters.items()
               if p.kind == p.KEYWORD_ONLY and k not in ("seed", "summary")}
    bad = sorted(set(params) - allowed)
    if bad:
        raise ValueError(f"generator_params: unknown key(s) {bad} for {kind}; known: {sorted(allowed)}")
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


def synthesis_columns(cfg: RunConfig) -> list[str]:
    """Feature columns generated (survival columns excluded), in order."""
    schema = get_schema(cfg.use_case)
    if cfg.features:
        cols = list(cfg.features)
    elif cfg.feature_groups:
        cols = [f.name for f in schema.features if f.group in cfg.feature_groups]
    elif cfg.use_case in DEFAULT_COLUMNS:
        cols = list(DEFAULT_COLUMNS[cfg.use_case])
    else:
        cols = [f.name for f in schema.features if f.group in ("clinical", "cytogenetic", "genomic")]
    for c in cols:
        try:
            schema.feature(c)
        except KeyError:
            raise ValueError(f"features: {c!r} is not a feature of the {cfg.use_case} schema") from None
    return cols


def synthesis_spec(cfg: RunConfig):
    """The TableSpec every node and the manager share (public: built from the schema)."""
    from generative import TableSpec

    schema = get_schema(cfg.use_case)
    cols = synthesis_columns(cfg)
    dur = schema.endpoint(cfg.endpoint).time_column
    return TableSpec.from_schema(schema, cols, cfg.endpoint, log=[c for c in cols if c in LOG_COLUMNS] + [dur],
                                 quasi_identifiers=[q for q in QUASI_IDENTIFIERS if q in cols])


def node_tables(df: pd.DataFrame, cfg: RunConfig, spec) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(training rows, held-out rows, rows left out for a missing value) of this node, validated
    against `spec`; the split is the same seeded split as survival studies."""
    missing = [c for c in spec.names if c not in df.columns]
    if missing:
        raise ValueError(f"the node's table lacks the generated column(s) {missing}")
    data = df[spec.names]
    complete = data.dropna().reset_index(drop=True)
    if len(complete) < MIN_ROWS:
        raise ValueError(f"{len(complete)} complete rows for the generated columns; need at least {MIN_ROWS}")
    complete = spec.validate(complete, where="node table")
    train, hold = split_holdout(complete, cfg.holdout_fraction, cfg.seed)
    return train.reset_index(drop=True), hold.reset_index(drop=True), int(len(data) - len(complete))


def _seed(cfg: RunConfig, *parts) -> int:
    return zlib.crc32(":".join(map(str, (cfg.seed,) + parts)).encode()) & 0x7FFFFFFF


# --- message codec: nested dicts with numpy arrays <-> (JSON skeleton, arrays) ---------------

def encode_payload(obj) -> tuple[object, list[np.ndarray]]:
    """Nested dict/list of JSON values and numpy arrays -> (JSON skeleton, arrays)."""
    arrays: list[np.ndarray] = []

    def enc(o):
        if isinstance(o, np.ndarray):
            a = o.astype(str) if o.dtype == object else o
            arrays.append(a if a.flags.c_contiguous else a.copy())  # keeps 0-d arrays 0-d
            return {"__nd__": len(arrays) - 1}
        if isinstance(o, dict):
            return {str(k): enc(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [enc(v) for v in o]
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            return o.item()
        return o
    return enc(obj), arrays


def decode_payload(skeleton, arrays: list[np.ndarray]):
    def dec(o):
        if isinstance(o, dict):
            if set(o) == {"__nd__"}:
                return arrays[int(o["__nd__"])]
            return {k: dec(v) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v) for v in o]
        return o
    return dec(skeleton)


def _request(kind: str, payload: dict, config: dict) -> NodeRequest:
    skel, arrays = encode_payload(payload)
    return NodeRequest(kind, arrays, {**config, "payload": skel})


def _reply(name: str, payload: dict | None, metrics: dict) -> NodeReply:
    if payload is None:
        return NodeReply(name=name, metrics=metrics)
    skel, arrays = encode_payload(payload)
    return NodeReply(name=name, arrays=arrays, metrics=metrics, stats={"payload": skel})


def reply_payload(reply: NodeReply):
    return decode_payload((reply.stats or {}).get("payload"), reply.arrays)


def frame_to_payload(df: pd.DataFrame) -> dict:
    """A synthetic table as {column: array} (categories as fixed-width text: no pickle)."""
    return {c: (df[c].to_numpy().astype(str) if df[c].dtype == object else df[c].to_numpy()) for c in df.columns}


def payload_to_frame(d: dict, spec) -> pd.DataFrame:
    return spec.validate(pd.DataFrame({c: np.asarray(d[c]) for c in spec.names}), where="synthetic cohort")


# --- node side -----------------------------------------------------------------------------

def _make(kind: str, spec, cfg: RunConfig, summary: dict, seed: int):
    from generative import make_generator

    return make_generator(kind, spec, seed=seed, summary=summary, **cfg.generator_params)


def _round_hyper(cfg: RunConfig) -> dict:
    return {k: v for k, v in cfg.generator_params.items() if k != "epochs"}


def _own_scores(syn: pd.DataFrame, train: pd.DataFrame, hold: pd.DataFrame, spec, seed: int) -> dict:
    """CSF, GSF, NNDR p5 of `syn` against this node's own patients (computed on the node)."""
    from generative import SafeConfig, manager_pool, node_validate

    sc = SafeConfig(seed=seed)
    rep = manager_pool([node_validate(syn, train, hold, spec, parts=("fidelity", "privacy"), cfg=sc)], syn, spec, sc)
    return {"csf": rep.get("csf"), "gsf": rep.get("gsf"), "nndr_p5": rep.get("nndr_p5"),
            "holdout_nndr_p5": rep.get("privacy", {}).get("holdout_nndr_p5")}


def handle_synth_request(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """Answer one synth_* request on this node's table (ClientApp and in-process nodes)."""
    from generative import node_column_summaries, node_validate

    from fl_engine.federation.privacy import check_min_patients

    spec = synthesis_spec(cfg)
    train, hold, n_incomplete = node_tables(df, cfg, spec)
    check_min_patients(len(train), cfg.min_patients_per_node, name, f"answer the {req.kind} request")
    p = decode_payload(req.config.get("payload", {}), req.arrays)
    r = int(req.config.get("round", 0))
    counts = {"n_train": len(train), "n_holdout": len(hold), "n_incomplete": n_incomplete}
    kind = cfg.generator
    if req.kind == "synth_summary":
        return _reply(name, node_column_summaries(train, spec, seed=_seed(cfg, "summary", name)), counts)
    summary = p.get("summary")
    if req.kind == "synth_round":
        seed = _seed(cfg, "round", r, name)
        if kind == "vae_bgm":
            from generative.backends.vae_bgm import node_vae_round as node_round
        else:
            from generative.backends.ctgan import node_ctgan_round as node_round
        out = node_round(spec, summary, p["params"], train, local_epochs=cfg.local_epochs, seed=seed,
                         **_round_hyper(cfg))
        return _reply(name, {"n": out["n"], "params": out["params"]}, counts)
    if req.kind == "synth_mixture":
        from generative.backends.vae_bgm import node_latent_mixture
        return _reply(name, node_latent_mixture(spec, summary, p["params"], train, seed=_seed(cfg, "mix", name),
                                                **_round_hyper(cfg)), counts)
    if req.kind == "synth_structure":
        from generative.backends import bayesnet as bn
        g = _make(kind, spec, cfg, summary, 0)
        return _reply(name, bn.node_structure(spec, summary, train, n_bins=g.n_bins, max_indegree=g.max_indegree,
                                              method=g.structure_method, seed=_seed(cfg, "bn", name)), counts)
    if req.kind == "synth_counts":
        from generative.backends import bayesnet as bn
        g = _make(kind, spec, cfg, summary, 0)
        return _reply(name, bn.node_family_counts(spec, summary, p["edges"], train, n_bins=g.n_bins), counts)
    if req.kind == "synth_validate":
        from generative import SafeConfig
        syn = payload_to_frame(p["synthetic"], spec)
        parts = tuple(p.get("parts", ("fidelity", "privacy")))
        rep = node_validate(syn, train, hold, spec, tstr_model=p.get("tstr_model"), parts=parts,
                            cfg=SafeConfig(seed=_seed(cfg, "validate", r, name)))
        return _reply(name, rep, counts)
    if req.kind == "synth_alone":
        return _node_alone(train, hold, cfg, spec, summary, p.get("params"), r, name, counts)
    if req.kind == "synth_share":
        return _node_share(train, hold, cfg, spec, p, name, counts)
    raise ValueError(f"unknown request kind {req.kind!r}; known: {', '.join(SYNTH_KINDS)}")


def _node_alone(train, hold, cfg, spec, summary, params, r, name, counts) -> NodeReply:
    seed = _seed(cfg, "alone", r, name)
    kind = cfg.generator
    if kind == "bayesian_network":
        g = _make(kind, spec, cfg, summary, seed).fit(train)
        out_params = None
    else:
        g = _make(kind, spec, cfg, summary, seed)
        if params is not None:
            g.set_parameters(params)
        data = spec.validate(train, where="node alone")
        g.train_local(data, cfg.local_epochs, seed)
        g._fitted = True
        if kind == "vae_bgm":
            from generative.backends.vae_bgm import fit_latent_bgm
            from generative.aggregation import torch_state_to_message
            g.set_mixture(fit_latent_bgm(g.latent_means(data), g.n_components, seed))
            out_params = torch_state_to_message(g.net)
        else:
            out_params = g.get_parameters()
    syn = g.sample(len(train), seed=seed + 1)
    scores = _own_scores(syn, train, hold, spec, seed)
    metrics = {**counts, **{f"alone_{k}": float(v) for k, v in scores.items() if v is not None}}
    return _reply(name, {"params": out_params} if out_params is not None else None, metrics)


def share_hyper(cfg: RunConfig) -> tuple[str, dict]:
    """(base generator, its hyper-parameters) a node trains for sd_sharing; the run's local_epochs
    are its training epochs unless generator_params set "epochs"."""
    hyper = generator_hyper("sd_sharing", dict(cfg.generator_params))
    base = hyper.pop("kind")
    if base in ITERATIVE:
        hyper.setdefault("epochs", cfg.local_epochs)
    return base, hyper


def rows_to_payload(df: pd.DataFrame, spec) -> dict:
    """Synthetic rows as {column: 1-D numeric array}: categories as integer codes into the spec's
    categories (only numbers leave a node)."""
    out = {}
    for c in spec.columns:
        v = df[c.name]
        if c.kind == "categorical":
            codes = pd.Categorical(v.astype(str), categories=list(c.categories)).codes
            if (codes < 0).any():
                raise ValueError(f"synthetic column {c.name!r} holds a value outside {list(c.categories)}")
            out[c.name] = codes.astype(np.int16)
        else:
            out[c.name] = v.to_numpy(dtype=float)
    return out


def payload_to_rows(d: dict, spec) -> pd.DataFrame:
    """Inverse of rows_to_payload, validated against the spec (raises ValueError naming the column)."""
    cols = {}
    for c in spec.columns:
        a = np.asarray(d[c.name])
        if c.kind == "categorical":
            if a.size and (a.min() < 0 or a.max() >= len(c.categories) or not np.issubdtype(a.dtype, np.integer)):
                raise ValueError(f"shared column {c.name!r}: codes outside 0..{len(c.categories) - 1}")
            cols[c.name] = np.asarray(c.categories, dtype=object)[a.astype(int)]
        else:
            cols[c.name] = a
    return spec.validate(pd.DataFrame(cols), where="shared synthetic rows")


def _node_share(train, hold, cfg, spec, p, name, counts) -> NodeReply:
    """sd_sharing on this node: local generator, own gate, rows only if it passed."""
    from generative.sd_sharing import node_share_synthetic

    if cfg.generator != "sd_sharing":
        raise ValueError(f"synth_share belongs to the sd_sharing generator, not to {cfg.generator!r}")
    if list(p.get("columns") or []) != spec.names:
        raise ValueError(f"synth_share: requested columns {p.get('columns')} are not this run's "
                         f"generated columns {spec.names}")
    n_rows = p.get("n_rows")
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"synth_share: n_rows={n_rows!r} must be a positive integer")
    base, hyper = share_hyper(cfg)
    out = node_share_synthetic(spec, train, hold, n_rows=n_rows, kind=base, hyper=hyper,
                               seed=_seed(cfg, "share", name))
    metrics = {**counts, "gate_passed": 1.0 if out["passed"] else 0.0,
               "n_shared": float(n_rows if out["passed"] else 0)}
    for c in out["gate"]["checks"]:
        metrics[f"gate_{c['name']}_threshold"] = float(c["threshold"])
        if c["measured"] is not None:  # not measured = failed, shown as missing
            metrics[f"gate_{c['name']}"] = float(c["measured"])
            metrics[f"gate_{c['name']}_margin"] = float(c["margin"])  # negative = failed by that much
    if not out["passed"]:
        return _reply(name, None, metrics)
    return _reply(name, {"rows": rows_to_payload(pd.DataFrame(out["rows"]), spec)}, metrics)


# --- privacy check of replies ------------------------------------------------------------

_ALLOWED = {
    "synth_summary": {"n", "columns"},
    "synth_round": {"n", "params"},
    "synth_mixture": {"n", "weights", "means", "covariances"},
    "synth_structure": {"n", "edges"},
    "synth_counts": {"n", "counts"},
    "synth_validate": {"n_train", "n_holdout", "n_synthetic", "parts", "stats", "scores", "tstr", "privacy"},
    "synth_alone": {"params"},
    "synth_share": {"rows"},
}
_SUMMARY_KEYS = ({"sum", "sumsq", "min", "max", "quantiles", "gmm"}, {"counts"})
_VALIDATE_KEYS = {"stats": {"n", "ecdf", "cat", "sum", "cross", "events", "censored"},
                  "scores": {"csf", "gsf"}, "tstr": {"c_index", "n"}}


def check_synth_reply_privacy(kind: str, reply: NodeReply, weight_shapes: list[tuple] | None,
                              request: NodeRequest | None = None) -> None:
    """Raise ValueError unless a synth_* reply holds only what may leave a node: scalar metrics,
    and a payload of the kind's allowed keys whose arrays are numbers (never text, never a row
    table); parameters of synth_round / synth_alone have shapes present in the request. Rows may
    leave only in a synth_share reply whose gate_passed metric is 1, with exactly the columns and
    at most the rows that `request` asked for (without the request, rows are refused)."""
    for k, v in reply.metrics.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError(f"{kind} reply metric {k!r} is not a scalar number: {type(v).__name__}")
    if kind not in _ALLOWED:
        raise ValueError(f"unknown synthesis reply kind {kind!r}")
    if reply.stats is None:
        if reply.arrays:
            raise ValueError(f"{kind} reply carries arrays without a payload")
        return
    if set(reply.stats) != {"payload"}:
        raise ValueError(f"{kind} reply statistics must be one payload, got keys {sorted(reply.stats)}")
    for i, a in enumerate(reply.arrays):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"{kind} reply array {i} has dtype {a.dtype}: only numbers may leave a node")
    _check_texts(kind, reply.stats["payload"])
    p = reply_payload(reply)
    if not isinstance(p, dict) or not set(p) <= _ALLOWED[kind]:
        raise ValueError(f"{kind} reply payload keys {sorted(p) if isinstance(p, dict) else type(p).__name__} "
                         f"are not within {sorted(_ALLOWED[kind])}")
    if kind == "synth_summary":
        for col, c in p.get("columns", {}).items():
            if set(c) not in _SUMMARY_KEYS:
                raise ValueError(f"{kind}: summary of column {col!r} has keys {sorted(c)}")
    if kind == "synth_validate":
        for key, allowed in _VALIDATE_KEYS.items():
            if key in p and not set(p[key]) <= allowed:
                raise ValueError(f"{kind}: {key} has keys {sorted(set(p[key]) - allowed)} beyond {sorted(allowed)}")
        if "privacy" in p and any(not _is_number_or_array(v) for v in p["privacy"].values()):
            raise ValueError(f"{kind}: privacy figures must be numbers or histograms")
    if kind in ("synth_round", "synth_alone") and p.get("params") is not None:
        allowed_shapes = [tuple(s) for s in (weight_shapes or [])] + [()]  # () = one number
        for key, a in p["params"].items():
            if not isinstance(a, np.ndarray) or tuple(a.shape) not in allowed_shapes:
                raise ValueError(f"{kind}: parameter {key!r} shape {np.shape(a)} is not a shape the "
                                 "manager sent (only model parameters may return)")
    if kind == "synth_share" and "rows" in p:
        _check_share_rows(reply, p["rows"], request)


def _check_share_rows(reply: NodeReply, rows, request: NodeRequest | None) -> None:
    if reply.metrics.get("gate_passed") != 1:
        raise ValueError(f"synth_share: node {reply.name} sends rows although its privacy gate did not pass "
                         f"(gate_passed={reply.metrics.get('gate_passed')!r})")
    if request is None or request.kind != "synth_share":
        raise ValueError("synth_share: rows can be checked only against the synth_share request; refused")
    asked = decode_payload(request.config.get("payload", {}), request.arrays)
    columns, n_max = list(asked.get("columns") or []), asked.get("n_rows")
    if not isinstance(rows, dict) or set(rows) != set(columns):
        got = set(rows) if isinstance(rows, dict) else set()
        raise ValueError(f"synth_share: row columns differ from the requested ones: foreign "
                         f"{sorted(got - set(columns))}, missing {sorted(set(columns) - got)}")
    lengths = set()
    for col, a in rows.items():
        if not isinstance(a, np.ndarray) or a.ndim != 1:
            raise ValueError(f"synth_share: column {col!r} is not a 1-D array")
        lengths.add(len(a))
    if len(lengths) > 1:
        raise ValueError(f"synth_share: columns have different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    if not isinstance(n_max, int) or n > n_max:
        raise ValueError(f"synth_share: {n} rows, more than the {n_max} requested")


_PARTS = {"fidelity", "utility", "privacy"}


def _check_texts(kind: str, skeleton) -> None:
    """Text may travel only as the validation parts' names or, in a structure, column names
    (identifiers): never free text such as a patient's values."""
    def walk(o):
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str):
            ok = o in _PARTS if kind != "synth_structure" else (len(o) <= 80 and o.replace("_", "").isalnum())
            if not ok:
                raise ValueError(f"{kind} reply carries text {o[:40]!r}: only numbers may leave a node")
    walk(skeleton)


def _is_number_or_array(v) -> bool:
    return isinstance(v, np.ndarray) or (isinstance(v, (int, float)) and not isinstance(v, bool))


# --- manager side -------------------------------------------------------------------------

def initial_parameters(cfg: RunConfig, spec, summary: dict) -> dict:
    """Seeded initial parameters of the global generator (every node starts from them)."""
    from generative.aggregation import torch_state_to_message

    g = _make(cfg.generator, spec, cfg, summary, cfg.seed)
    if cfg.generator == "vae_bgm":
        return torch_state_to_message(g.net)
    g._fitted = True
    return g.get_parameters()


def _node_privacy(rep: dict) -> float:
    from generative.safe import pool_privacy
    return pool_privacy([rep["privacy"]])["nndr_p5"] if "privacy" in rep else float("nan")


def round_metrics_synth(pooled: dict, node_reps: dict[str, dict], alone: dict[str, dict]) -> list[dict]:
    """Metric records of one round: global and per-node CSF / GSF / NNDR p5, and the nodes'
    alone_* scores."""
    out = []
    for name in sorted(node_reps):
        rep = node_reps[name]
        for k in ("csf", "gsf"):
            out.append({"node": name, "name": k, "value": rep.get("scores", {}).get(k)})
        out.append({"node": name, "name": "nndr_p5", "value": _node_privacy(rep)})
        out.append({"node": name, "name": "n_train", "value": float(rep["n_train"])})
    for name in sorted(alone):
        for k, v in alone[name].items():
            if k.startswith("alone_"):
                out.append({"node": name, "name": k, "value": v})
    priv = pooled.get("privacy", {})
    for k, v in (("csf", pooled.get("csf")), ("gsf", pooled.get("gsf")), ("nndr_p5", pooled.get("nndr_p5")),
                 ("holdout_nndr_p5", priv.get("holdout_nndr_p5")), ("dcr_p5", priv.get("dcr_p5")),
                 ("mia_auc", priv.get("mia_auc")), ("tstr_c_index", pooled.get("tstr_c_index"))):
        if v is not None:
            out.append({"node": "global", "name": k, "value": v})
    return [{**m, "value": float(m["value"])} for m in out if m["value"] is not None]


def run_synthesis(cfg: RunConfig, transport, sink=None) -> dict:
    """Federated generation: summaries, rounds of training + validation, final cohort and report.
    Returns {"synthetic": DataFrame, "report", "gate", "rounds": [...]}; raises FederationError."""
    from fl_engine.federation.events import EventSink

    sink = sink or EventSink.from_config(cfg)
    t_end = time.monotonic() + cfg.run_timeout_s
    sink.event("started")
    try:
        out = _run(cfg, transport, sink, t_end)
        files = synthesis_files(cfg, out)
    except Exception as err:
        sink.event("failed", reason=str(err))
        raise
    if cfg.model_dir:
        save_synthesis(cfg.model_dir, cfg, out)
    sink.finished(files, rounds=len(out["rounds"]))
    return out


def _run(cfg: RunConfig, transport, sink, t_end: float) -> dict:
    from generative import GateThresholds, evaluate_gate, fit_tstr_model, manager_merge_summaries, manager_pool
    from generative import SafeConfig
    from fl_engine.federation.loop import report_missed, successful_replies, time_budget, wait_for_nodes

    if cfg.generator not in SYNTH_GENERATORS:
        raise FederationError(f"generator {cfg.generator!r} is not one of {', '.join(SYNTH_GENERATORS)}")
    spec = synthesis_spec(cfg)
    budget = time_budget(cfg, t_end)

    keys = wait_for_nodes(cfg, transport, budget("waiting for nodes"))
    first = transport.request({k: NodeRequest("synth_summary", [], {"round": 0}) for k in keys}, budget("summaries"))
    report_missed(sink, first, "summaries", {p["node_id"]: p["node"] for p in cfg.participants})
    ok = successful_replies(first, "summaries", cfg.min_nodes)
    names = {k: r.name for k, r in ok.items()}
    if len(set(names.values())) != len(names):
        raise FederationError(f"two nodes report the same name: {sorted(names.values())}")
    order = sorted(ok, key=names.get)
    summary = manager_merge_summaries([reply_payload(ok[k]) for k in order], spec, seed=cfg.seed)
    n_train = {names[k]: int(ok[k].metrics["n_train"]) for k in order}
    n_val = sum(n_train.values())
    n_final = cfg.synth_rows or n_val
    live = list(order)  # node keys still in the run

    def phase(kind: str, payload: dict, r: int, what: str, per_node: dict | None = None) -> dict[str, NodeReply]:
        reqs = {k: _request(kind, {**payload, **(per_node or {}).get(names[k], {})}, {"round": r}) for k in live}
        answered = transport.request(reqs, budget(what))
        report_missed(sink, answered, what, names)
        replies = successful_replies(answered, what, cfg.min_nodes)
        live[:] = [k for k in live if k in replies]
        return {names[k]: v for k, v in replies.items()}

    g = _make(cfg.generator, spec, cfg, summary, cfg.seed) if cfg.generator != "sd_sharing" else None
    rounds: list[dict] = []
    alone_params: dict[str, dict] = {}
    params = initial_parameters(cfg, spec, summary) if cfg.generator in ITERATIVE else None
    n_rounds = cfg.num_rounds if cfg.generator in ITERATIVE else 1
    from generative.aggregation import weighted_fedavg
    report = synthetic = None
    for r in range(1, n_rounds + 1):
        t0 = time.monotonic()
        if cfg.generator in ITERATIVE:
            ups = phase("synth_round", {"summary": summary, "params": params}, r, f"round {r} training")
            un = sorted(ups)
            # np.asarray: FedAvg of a 0-d counter gives a numpy scalar; keep it an array
            params = {k: np.asarray(v) for k, v in weighted_fedavg(
                [reply_payload(ups[n])["params"] for n in un], [reply_payload(ups[n])["n"] for n in un]).items()}
            g.set_parameters(params)
            if cfg.generator == "vae_bgm":
                from generative.backends.vae_bgm import manager_latent_mixture
                mix = phase("synth_mixture", {"summary": summary, "params": params}, r, f"round {r} latent mixture")
                g.set_mixture(manager_latent_mixture([reply_payload(mix[n]) for n in sorted(mix)]))
            init = initial_parameters(cfg, spec, summary) if r == 1 else None
            alone = phase("synth_alone", {"summary": summary},
                          r, f"round {r} nodes alone",
                          per_node={n: {"params": alone_params.get(n, init)} for n in n_train})
            for n, rep in alone.items():
                pl = reply_payload(rep) or {}
                if pl.get("params") is not None:
                    alone_params[n] = pl["params"]
        elif cfg.generator == "sd_sharing":
            g, alone = _pool_shares(cfg, spec, phase, r, n_train, n_final)
            n_final = min(n_final, len(g.pool))  # fewer rows when some node's gate failed
        else:
            from generative.backends import bayesnet as bn
            st = phase("synth_structure", {"summary": summary}, r, "network structure")
            edges = bn.manager_merge_structures([reply_payload(st[n]) for n in sorted(st)], spec.names,
                                                max_indegree=g.max_indegree)
            cn = phase("synth_counts", {"summary": summary, "edges": edges}, r, "family counts")
            g.set_parameters({"edges": edges, "counts": bn.manager_counts([reply_payload(cn[n]) for n in sorted(cn)])})
            alone = phase("synth_alone", {"summary": summary}, r, "nodes alone")
        last = r == n_rounds
        syn = g.sample(n_final if last else n_val, seed=_seed(cfg, "sample", r))
        sc = SafeConfig(seed=cfg.seed)
        payload = {"synthetic": frame_to_payload(syn),
                   "parts": ["fidelity", "utility", "privacy"] if last else ["fidelity", "privacy"]}
        if last:
            payload["tstr_model"] = fit_tstr_model(syn, spec, sc)
        val = phase("synth_validate", payload, r, f"round {r} validation")
        reps = {n: reply_payload(v) for n, v in val.items()}
        pooled = manager_pool([reps[n] for n in sorted(reps)], syn, spec, sc)
        metrics = round_metrics_synth(pooled, reps, {n: v.metrics for n, v in alone.items()})
        if cfg.generator == "sd_sharing":  # each node's own gate: passed flag and measured values
            metrics += [{"node": n, "name": k, "value": float(v)} for n in sorted(alone)
                        for k, v in alone[n].metrics.items() if k.startswith("gate_") or k == "n_shared"]
        metrics.append({"node": "global", "name": "round_time_s", "value": time.monotonic() - t0})
        rounds.append({"round": r, "metrics": metrics})
        sink.round(r, metrics)
        log.info("synthesis round %d: CSF %.3f, GSF %.3f, NNDR p5 %.3f", r, pooled.get("csf", float("nan")),
                 pooled.get("gsf", float("nan")), pooled.get("nndr_p5", float("nan")))
        report, synthetic = pooled, syn
    gate = evaluate_gate(report, GateThresholds())
    return {"synthetic": synthetic, "report": report, "gate": gate, "rounds": rounds,
            "nodes": sorted(n_train), "n_train": n_train, "spec": spec.as_dict()}


def _pool_shares(cfg: RunConfig, spec, phase, r: int, n_train: dict[str, int], n_final: int):
    """sd_sharing: ask each node for its share of n_final rows (in proportion to its training
    patients), pool the rows of nodes whose gate passed. Returns (pool generator, replies by
    node); raises FederationError naming every node's failed checks when none passed."""
    from generative.sd_sharing import SyntheticPoolGenerator, manager_pool_synthetic

    total = sum(n_train.values())
    want = {n: max(1, -(-n_final * k // total)) for n, k in n_train.items()}  # integer ceiling
    replies = phase("synth_share", {"columns": spec.names}, r, "synthetic-data sharing",
                    per_node={n: {"n_rows": want[n]} for n in n_train})
    shares = []
    for n in sorted(replies):
        passed = replies[n].metrics.get("gate_passed") == 1
        rows = (reply_payload(replies[n]) or {}).get("rows") if passed else None
        shares.append({"passed": passed and rows is not None,
                       "rows": payload_to_rows(rows, spec) if rows is not None else None})
    if not any(s["passed"] for s in shares):
        detail = "; ".join(f"{n}: " + (", ".join(_failed_checks(replies[n].metrics)) or "no check measured")
                           for n in sorted(replies))
        raise FederationError(f"sd_sharing: no node passed its privacy gate ({detail})")
    pool = manager_pool_synthetic(shares, spec)
    g = SyntheticPoolGenerator(spec, seed=cfg.seed).fit(pool)
    g.fit_info["node_gates"] = {n: bool(replies[n].metrics.get("gate_passed") == 1) for n in sorted(replies)}
    log.info("sd_sharing: %d rows pooled from %d of %d nodes", len(pool), sum(s["passed"] for s in shares),
             len(shares))
    return g, replies


def _failed_checks(metrics: dict) -> list[str]:
    """'check measured vs threshold' for each failed gate check in a synth_share reply's metrics."""
    out = []
    for key in sorted(k for k in metrics if k.startswith("gate_") and k.endswith("_threshold")):
        name = key[len("gate_"):-len("_threshold")]
        th, m, margin = metrics[key], metrics.get(f"gate_{name}"), metrics.get(f"gate_{name}_margin")
        if m is None or margin is None or not math.isfinite(m):
            out.append(f"{name} not measured (threshold {th:g})")
        elif margin < 0:
            out.append(f"{name} {m:.3g} vs threshold {th:g}")
    return out


def save_synthesis(model_dir: str | Path, cfg: RunConfig, out: dict) -> Path:
    """Write synthetic.csv (the final cohort: synthetic rows only) and synthesis.json (pooled
    SAFE report with the gate, per-round metrics, generator and parameters)."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in synthesis_files(cfg, out).items():
        (d / name).write_bytes(data)
    return d


def synthesis_files(cfg: RunConfig, out: dict) -> dict[str, bytes]:
    """{"synthetic.csv": the final cohort, "synthesis.json": report, gate, rounds, parameters}."""
    from fl_engine.federation.loop import _finite

    meta = {"task": "synthesis", "generator": cfg.generator, "generator_params": cfg.generator_params,
            "use_case": cfg.use_case, "endpoint": cfg.endpoint, "num_rounds": len(out["rounds"]),
            "local_epochs": cfg.local_epochs, "n_rows": int(len(out["synthetic"])),
            "nodes": out["nodes"], "n_train": out["n_train"], "spec": out["spec"],
            "report": {**out["report"], "gate": out["gate"]}, "gate": out["gate"], "rounds": out["rounds"]}
    return {"synthetic.csv": out["synthetic"].to_csv(index=False).encode(),
            "synthesis.json": json.dumps(_finite(_plain(meta)), indent=1).encode()}


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return o


# --- in process ---------------------------------------------------------------------------

class CheckedTransport:
    """A transport whose replies pass `core.check_reply_privacy` as in the ClientApp (a reply
    that fails becomes that node's error), so in-process runs enforce the same rule."""

    def __init__(self, inner):
        self.inner = inner
        self.replies: list[tuple[str, NodeReply]] = []  # (kind, reply) of every accepted reply

    def nodes(self) -> list[str]:
        return self.inner.nodes()

    def request(self, requests: dict[str, NodeRequest], timeout_s: float) -> dict:
        from fl_engine.federation.core import check_reply_privacy

        out = self.inner.request(requests, timeout_s)
        for k, rep in out.items():
            if isinstance(rep, NodeReply):
                req = requests[k]
                try:
                    check_reply_privacy(req.kind, rep, [np.shape(a) for a in req.arrays] if req.arrays else None, req)
                    self.replies.append((req.kind, rep))
                except ValueError as err:
                    out[k] = err
        return out


def run_synthesis_in_process(config: dict | RunConfig, node_tables: dict[str, pd.DataFrame],
                             transport_out: list | None = None) -> dict:
    """Federated generation over {node name: ML-ready table} in this process (the same loop and
    node functions as the Flower apps; replies pass the same privacy check). `transport_out`,
    when given, receives the CheckedTransport (tests read the replies it accepted)."""
    from fl_engine.federation.config import parse_run_config
    from fl_engine.federation.events import EventSink
    from fl_engine.federation.executor import LocalTransport

    cfg = config if isinstance(config, RunConfig) else parse_run_config({"task": "synthesis", **config})
    if not node_tables:
        raise ValueError("run_synthesis_in_process: no node tables")
    t = CheckedTransport(LocalTransport(cfg, node_tables))
    if transport_out is not None:
        transport_out.append(t)
    return run_synthesis(cfg, t, EventSink.from_config(cfg))
