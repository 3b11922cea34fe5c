"""Manager-side aggregation of node messages.

Messages are plain dicts of numpy arrays and JSON numbers, so the Flower deployment can carry
them unchanged (``flwr`` ``ArrayRecord``/``MetricRecord``). Two aggregations cover every
generator: weighted FedAvg of parameters (McMahan et al. 2017, weights = patients per node) and
summation of counts / sufficient statistics (exact: equals the pooled-data counts).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class MessageError(ValueError):
    """A node message does not have the expected shape; the text names node and key."""


def weighted_fedavg(params: Sequence[Mapping[str, np.ndarray]],
                    weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Weighted mean of K parameter dicts (same keys and shapes) with weights (K,) >= 0.

    Computed as ``p_0 + sum_k w_k (p_k - p_0) / sum_k w_k`` so that K identical models return
    the model bit for bit. Integer arrays (counters) are rounded back to their dtype.
    """
    if len(params) == 0:
        raise MessageError("weighted_fedavg: no node parameters")
    if len(params) != len(weights):
        raise MessageError(f"weighted_fedavg: {len(params)} parameter sets but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise MessageError(f"weighted_fedavg: weights must be finite, >= 0 and not all 0: {w.tolist()}")
    w = w / w.sum()
    keys = list(params[0].keys())
    for k, p in enumerate(params):
        if set(p.keys()) != set(keys):
            raise MessageError(f"weighted_fedavg: node {k} keys differ from node 0: "
                               f"{sorted(set(p) ^ set(keys))}")
    out = {}
    for key in keys:
        base = np.asarray(params[0][key])
        acc = np.zeros(base.shape, dtype=np.float64)
        for k, p in enumerate(params):
            a = np.asarray(p[key])
            if a.shape != base.shape:
                raise MessageError(f"weighted_fedavg: node {k} {key!r} shape {a.shape} != {base.shape}")
            if k and w[k]:
                acc += w[k] * (a.astype(np.float64) - base)
        if np.issubdtype(base.dtype, np.integer):
            out[key] = np.rint(base + acc).astype(base.dtype)
        else:
            res = base.astype(np.float64) + acc
            out[key] = res.astype(base.dtype)
    return out


def sum_counts(messages: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Element-wise sum of count / sufficient-statistic dicts (same keys and shapes)."""
    if len(messages) == 0:
        raise MessageError("sum_counts: no node messages")
    keys = list(messages[0].keys())
    out = {}
    for key in keys:
        total = None
        for k, m in enumerate(messages):
            if key not in m:
                raise MessageError(f"sum_counts: node {k} lacks {key!r}")
            a = np.asarray(m[key])
            if total is not None and a.shape != total.shape:
                raise MessageError(f"sum_counts: node {k} {key!r} shape {a.shape} != {total.shape}")
            total = a.copy() if total is None else total + a
        out[key] = total
    return out


def torch_state_to_message(module) -> dict[str, np.ndarray]:
    """A torch module's state dict as {name: numpy array} (a copy)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def message_to_torch_state(module, params: Mapping[str, np.ndarray]) -> None:
    """Load {name: numpy array} into a torch module; names and shapes must match."""
    import torch

    state = module.state_dict()
    missing = set(state) ^ set(params)
    if missing:
        raise MessageError(f"parameters do not match the model: keys {sorted(missing)}")
    new = {}
    for k, v in state.items():
        a = np.asarray(params[k])
        if tuple(a.shape) != tuple(v.shape):
            raise MessageError(f"parameter {k!r}: shape {a.shape} != model {tuple(v.shape)}")
        new[k] = torch.as_tensor(a, dtype=v.dtype)
    module.load_state_dict(new)
