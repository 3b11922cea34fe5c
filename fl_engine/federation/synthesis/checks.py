"""What a synth_* reply may carry (the checks synthesis.kinds registers; the protocol has
already checked that every metric is a scalar number).

A reply is scalar metrics and, at most, one payload of its kind's allowed keys whose arrays are
numbers (never text, never a row table); parameters of synth_round / synth_alone have shapes
present in the request. Rows may leave only in a synth_share reply whose gate_passed metric is
1, with exactly the columns and at most the rows that the request asked for (without the
request, rows are refused).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fl_engine.federation.core import NodeReply, NodeRequest
from fl_engine.federation.synthesis.codec import reply_payload, request_payload

_PARTS = {"fidelity", "utility", "privacy"}
_SUMMARY_KEYS = ({"sum", "sumsq", "min", "max", "quantiles", "gmm"}, {"counts"})
_VALIDATE_KEYS = {"stats": {"n", "ecdf", "cat", "sum", "cross", "events", "censored"},
                  "scores": {"csf", "gsf"}, "tstr": {"c_index", "n"}}


@dataclass(frozen=True)
class PayloadCheck:
    """The reply check of one synth_* kind: its payload's `allowed` keys, whether its text may
    hold identifiers (column names in a structure) rather than only the validation parts'
    names, and `then`, the kind's own check of the decoded payload (kind, reply, payload,
    weight shapes, request)."""

    allowed: frozenset[str]
    identifiers: bool = False
    then: Callable[[str, NodeReply, dict, list[tuple] | None, NodeRequest | None], None] | None = None

    def __call__(self, kind: str, reply: NodeReply, weight_shapes: list[tuple] | None,
                 request: NodeRequest | None = None) -> None:
        if reply.stats is None:
            if reply.arrays:
                raise ValueError(f"{kind} reply carries arrays without a payload")
            return
        if set(reply.stats) != {"payload"}:
            raise ValueError(f"{kind} reply statistics must be one payload, got keys {sorted(reply.stats)}")
        for i, a in enumerate(reply.arrays):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
                raise ValueError(f"{kind} reply array {i} has dtype {a.dtype}: only numbers may leave a node")
        _check_texts(kind, reply.stats["payload"], self.identifiers)
        p = reply_payload(reply)
        if not isinstance(p, dict) or not set(p) <= self.allowed:
            raise ValueError(f"{kind} reply payload keys {sorted(p) if isinstance(p, dict) else type(p).__name__} "
                             f"are not within {sorted(self.allowed)}")
        if self.then is not None:
            self.then(kind, reply, p, weight_shapes, request)


def check_summary(kind: str, reply: NodeReply, p: dict, weight_shapes, request) -> None:
    """Per column: sums, extremes, quantiles and a mixture (numeric) or counts (categories)."""
    for col, c in p.get("columns", {}).items():
        if set(c) not in _SUMMARY_KEYS:
            raise ValueError(f"{kind}: summary of column {col!r} has keys {sorted(c)}")


def check_validation(kind: str, reply: NodeReply, p: dict, weight_shapes, request) -> None:
    """SAFE aggregates: counts and sums, two scores, a C-index, privacy numbers or histograms."""
    for key, allowed in _VALIDATE_KEYS.items():
        if key in p and not set(p[key]) <= allowed:
            raise ValueError(f"{kind}: {key} has keys {sorted(set(p[key]) - allowed)} beyond {sorted(allowed)}")
    if "privacy" in p and any(not _is_number_or_array(v) for v in p["privacy"].values()):
        raise ValueError(f"{kind}: privacy figures must be numbers or histograms")


def check_parameters(kind: str, reply: NodeReply, p: dict, weight_shapes: list[tuple] | None, request) -> None:
    """Generator parameters only of shapes the manager sent (or single numbers)."""
    if p.get("params") is None:
        return
    allowed_shapes = [tuple(s) for s in (weight_shapes or [])] + [()]  # () = one number
    for key, a in p["params"].items():
        if not isinstance(a, np.ndarray) or tuple(a.shape) not in allowed_shapes:
            raise ValueError(f"{kind}: parameter {key!r} shape {np.shape(a)} is not a shape the "
                             "manager sent (only model parameters may return)")


def check_share(kind: str, reply: NodeReply, p: dict, weight_shapes, request: NodeRequest | None) -> None:
    """Gated synthetic rows: only after a passed gate, the requested columns, at most the
    requested rows."""
    if "rows" not in p:
        return
    rows = p["rows"]
    if reply.metrics.get("gate_passed") != 1:
        raise ValueError(f"synth_share: node {reply.name} sends rows although its privacy gate did not pass "
                         f"(gate_passed={reply.metrics.get('gate_passed')!r})")
    if request is None or request.kind != "synth_share":
        raise ValueError("synth_share: rows can be checked only against the synth_share request; refused")
    asked = request_payload(request)
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


def _check_texts(kind: str, skeleton, identifiers: bool) -> None:
    """Text may travel only as the validation parts' names or, with `identifiers`, column names
    (identifiers): never free text such as a patient's values."""
    def walk(o):
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str):
            ok = (len(o) <= 80 and o.replace("_", "").isalnum()) if identifiers else o in _PARTS
            if not ok:
                raise ValueError(f"{kind} reply carries text {o[:40]!r}: only numbers may leave a node")
    walk(skeleton)


def _is_number_or_array(v) -> bool:
    return isinstance(v, np.ndarray) or (isinstance(v, (int, float)) and not isinstance(v, bool))
