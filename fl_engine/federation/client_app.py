"""Flower ClientApp: loads the run's dataset from this node's registry and answers one request.

Node config (``flower-supernode --node-config``): ``name`` (the hospital's node name),
``data-dir`` (its dataset registry), ``manager`` and ``token-file`` (where its approvals are
checked: fl_engine.node.approvals). Before any row is read the node checks that the run is an
approved study on exactly this dataset and these settings, and charges the run to the
dataset's privacy-budget ledger (fl_engine.node.budget; refused when it would overspend); every reply passes
`check_reply_privacy` before it leaves.
"""
from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.contract import from_flower
from fl_engine.federation.core import check_reply_privacy, handle_request
from fl_engine.federation.flower_io import reply_content, request_from_message
from fl_engine.node.approvals import ensure_approved
from fl_engine.node.budget import ensure_within_budget
from fl_engine.node.datasets import dataset_meta, load_dataset

app = ClientApp()


def _answer(msg: Message, context: Context) -> Message:
    cfg = parse_run_config(from_flower(dict(context.run_config), strict=False), strict=False)
    node_cfg = dict(context.node_config)
    if "data-dir" not in node_cfg:
        raise ValueError("node config has no 'data-dir' (start the node with fedhaem-node start)")
    name = str(node_cfg.get("name") or context.node_id)
    me = next((p for p in cfg.participants if p["node"] == name), None)
    version = (me or {}).get("version") or cfg.dataset_version
    meta = dataset_meta(node_cfg["data-dir"], cfg.dataset, version)
    ensure_approved(node_cfg, cfg, name, str(meta.get("fingerprint", "")), local_meta=meta)
    ensure_within_budget(node_cfg, cfg, name, meta, str(context.run_id))
    df, _meta = load_dataset(node_cfg["data-dir"], cfg.dataset, str(meta["version"]))
    req = request_from_message(msg)
    reply = handle_request(df, cfg, req, name)
    check_reply_privacy(req.kind, reply, [np.shape(a) for a in req.arrays] if req.arrays else None, req)
    return Message(reply_content(reply), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.query("baseline")
def baseline(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.query("reference")
def reference(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.query("cox_sums")
def cox_sums(msg: Message, context: Context) -> Message:
    """The exact Cox model's Newton step (fl_engine.federation.cox_kinds)."""
    return _answer(msg, context)


# Synthetic-cohort generation (fl_engine.federation.synthesis): one handler per message kind.
for _kind in ("synth_summary", "synth_round", "synth_mixture", "synth_structure", "synth_counts",
              "synth_validate", "synth_alone", "synth_share"):
    app.query(_kind)(_answer)

# Analysis studies (fl_engine.federation.analysis): describe, Kaplan-Meier counts, Cox sums.
for _kind in ("analysis_describe", "analysis_km", "analysis_cox"):
    app.query(_kind)(_answer)
