"""NodeRequest / NodeReply <-> Flower Message contents (the only place that knows the layout).

Each message holds ONE ConfigRecord: config / metrics / column statistics as JSON strings and
the weights as one .npy-archive bytes value. Flower stores and transfers every record and
every array as a separate object (one HTTP request each through the SuperLink and SuperNode);
one record per message instead of a record per array cut pushing a round's messages from
~1-2 s to a few tens of ms here. np.load(allow_pickle=False) keeps the decoding safe.
"""
from __future__ import annotations

import io
import json

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from fl_engine.federation.core import NodeReply, NodeRequest

MESSAGE_TYPES = {"stats": "query.stats", "train": "train", "evaluate": "evaluate",
                 "baseline": "query.baseline", "cox_sums": "query.cox_sums",
                 "synth_summary": "query.synth_summary", "synth_round": "query.synth_round",
                 "synth_mixture": "query.synth_mixture", "synth_structure": "query.synth_structure",
                 "synth_counts": "query.synth_counts", "synth_validate": "query.synth_validate",
                 "synth_alone": "query.synth_alone", "synth_share": "query.synth_share",
                 "reference": "query.reference", "analysis_describe": "query.analysis_describe",
                 "analysis_km": "query.analysis_km", "analysis_cox": "query.analysis_cox"}
KIND_OF_TYPE = {v: k for k, v in MESSAGE_TYPES.items()}


def pack_arrays(arrays: list[np.ndarray]) -> bytes:
    """Arrays -> bytes (an uncompressed .npz archive, order kept)."""
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i}": np.asarray(a) for i, a in enumerate(arrays)})
    return buf.getvalue()


def unpack_arrays(blob: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return [z[f"a{i}"] for i in range(len(z.files))]


def request_content(req: NodeRequest) -> RecordDict:
    rec = {"config": json.dumps(req.config)}
    if req.arrays:
        rec["arrays"] = pack_arrays(req.arrays)
    return RecordDict({"fedhaem": ConfigRecord(rec)})


def request_from_message(msg: Message) -> NodeRequest:
    kind = KIND_OF_TYPE.get(msg.metadata.message_type)
    if kind is None:
        raise ValueError(f"unexpected message type {msg.metadata.message_type!r}")
    rec = msg.content["fedhaem"]
    arrays = unpack_arrays(rec["arrays"]) if "arrays" in rec else []
    return NodeRequest(kind, arrays, json.loads(rec["config"]))


def reply_content(reply: NodeReply) -> RecordDict:
    rec = {"node_name": reply.name, "metrics": json.dumps(reply.metrics)}
    if reply.stats is not None:
        rec["stats"] = json.dumps(reply.stats)
    if reply.arrays:
        rec["arrays"] = pack_arrays(reply.arrays)
    return RecordDict({"fedhaem": ConfigRecord(rec)})


def reply_from_message(msg: Message) -> NodeReply:
    rec = msg.content["fedhaem"]
    return NodeReply(name=str(rec["node_name"]),
                     arrays=unpack_arrays(rec["arrays"]) if "arrays" in rec else [],
                     metrics=json.loads(rec["metrics"]),
                     stats=json.loads(rec["stats"]) if "stats" in rec else None)
