"""The message codec of synthesis: nested dicts of JSON values and numpy arrays travel as a JSON
skeleton (in the request's config or the reply's statistics, under "payload") plus the message's
arrays; synthetic tables travel as {column: array}."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fl_engine.federation.core import NodeReply, NodeRequest
from generative import TableSpec


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
    """Inverse of encode_payload."""
    def dec(o):
        if isinstance(o, dict):
            if set(o) == {"__nd__"}:
                return arrays[int(o["__nd__"])]
            return {k: dec(v) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v) for v in o]
        return o
    return dec(skeleton)


def make_request(kind: str, payload: dict, config: dict) -> NodeRequest:
    """A synth_* request carrying `payload` beside `config` (the round)."""
    skel, arrays = encode_payload(payload)
    return NodeRequest(kind, arrays, {**config, "payload": skel})


def make_reply(name: str, payload: dict | None, metrics: dict) -> NodeReply:
    """A synth_* reply: scalar `metrics` and, unless None, `payload`."""
    if payload is None:
        return NodeReply(name=name, metrics=metrics)
    skel, arrays = encode_payload(payload)
    return NodeReply(name=name, arrays=arrays, metrics=metrics, stats={"payload": skel})


def request_payload(req: NodeRequest) -> dict:
    """The payload of a synth_* request ({} when it has none)."""
    return decode_payload(req.config.get("payload", {}), req.arrays)


def reply_payload(reply: NodeReply):
    """The payload of a synth_* reply (None when it has none)."""
    return decode_payload((reply.stats or {}).get("payload"), reply.arrays)


def frame_to_payload(df: pd.DataFrame) -> dict:
    """A synthetic table as {column: array} (categories as fixed-width text: no pickle)."""
    return {c: (df[c].to_numpy().astype(str) if df[c].dtype == object else df[c].to_numpy()) for c in df.columns}


def payload_to_frame(d: dict, spec: TableSpec) -> pd.DataFrame:
    """Inverse of frame_to_payload, validated against the spec."""
    return spec.validate(pd.DataFrame({c: np.asarray(d[c]) for c in spec.names}), where="synthetic cohort")


def rows_to_payload(df: pd.DataFrame, spec: TableSpec) -> dict:
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


def payload_to_rows(d: dict, spec: TableSpec) -> pd.DataFrame:
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
