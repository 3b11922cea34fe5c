"""What a node answers to each synth_* message (the handlers synthesis.kinds registers).

Every handler starts from the node's complete-case tables for the run's spec (a node under
cfg.min_patients_per_node refuses) and replies with the counts (n_train, n_holdout,
n_incomplete) as metrics. Generator steps are the run's generator's own
(`generative.FederatedGenerator`); summaries and validation are the same for every generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import NodeReply, NodeRequest
from fl_engine.federation.privacy import check_min_patients
from fl_engine.federation.protocol import NodeHandler
from fl_engine.federation.synthesis.codec import make_reply, payload_to_frame, request_payload, rows_to_payload
from fl_engine.federation.synthesis.settings import federation, node_tables, run_seed, synthesis_spec
from generative import FederatedGenerator, SafeConfig, TableSpec, node_column_summaries, node_validate


@dataclass(frozen=True)
class NodeInput:
    """A request on this node: its training and held-out rows (validated against the spec), the
    request's payload and round, and the counts every reply carries."""

    cfg: RunConfig
    name: str
    spec: TableSpec
    train: pd.DataFrame
    hold: pd.DataFrame
    payload: dict
    round: int
    counts: dict

    def seed(self, *parts) -> int:
        """This node's seed for `parts` (a step, maybe a round)."""
        return run_seed(self.cfg, *parts, self.name)

    def generator(self) -> FederatedGenerator:
        """The run's generator on the global summary the request carries."""
        return federation(self.cfg, self.spec, self.payload.get("summary"))


def node_input(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeInput:
    spec = synthesis_spec(cfg)
    train, hold, n_incomplete = node_tables(df, cfg, spec)
    check_min_patients(len(train), cfg.min_patients_per_node, name, f"answer the {req.kind} request")
    return NodeInput(cfg, name, spec, train, hold, request_payload(req), int(req.config.get("round", 0)),
                     {"n_train": len(train), "n_holdout": len(hold), "n_incomplete": n_incomplete})


def answer_summary(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """Column summaries of the training rows (generative.transform)."""
    inp = node_input(df, cfg, req, name)
    return make_reply(name, node_column_summaries(inp.train, inp.spec, seed=inp.seed("summary")), inp.counts)


def answer_validate(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """SAFE aggregates of the manager's synthetic cohort against this node's own patients."""
    inp = node_input(df, cfg, req, name)
    p = inp.payload
    rep = node_validate(payload_to_frame(p["synthetic"], inp.spec), inp.train, inp.hold, inp.spec,
                        tstr_model=p.get("tstr_model"), parts=tuple(p.get("parts", ("fidelity", "privacy"))),
                        cfg=SafeConfig(seed=inp.seed("validate", inp.round)))
    return make_reply(name, rep, inp.counts)


def answer_step(step: str, seed_label: str, per_round: bool = False) -> NodeHandler:
    """The handler of generator step `step`: the generator's node answer, seeded by
    `seed_label` (and the round, when `per_round`) and this node's name."""
    def answer(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
        inp = node_input(df, cfg, req, name)
        seed = inp.seed(seed_label, inp.round) if per_round else inp.seed(seed_label)
        return make_reply(name, inp.generator().step(step).node(inp.payload, inp.train, inp.hold, seed), inp.counts)
    return answer


def answer_alone(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """The node alone: a generator of the run's kind on the global encoding, trained on this
    node's patients only; its scores go out as alone_* metrics, its parameters (iterative
    generators) as the payload, to be handed back next round (nodes keep no state)."""
    inp = node_input(df, cfg, req, name)
    out = inp.generator().step("alone").node(inp.payload, inp.train, inp.hold, inp.seed("alone", inp.round))
    metrics = {**inp.counts, **{f"alone_{k}": float(v) for k, v in out["scores"].items() if v is not None}}
    return make_reply(name, {"params": out["params"]} if out["params"] is not None else None, metrics)


def answer_share(df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
    """sd_sharing: the node's own generator, its own privacy gate (generative.gate, strict
    defaults) against its own holdout, and rows only if the gate passed (categories as integer
    codes); the gate always goes out as scalars: gate_passed, n_shared, gate_<check> (measured),
    gate_<check>_margin (negative = failed by that much) and gate_<check>_threshold."""
    inp = node_input(df, cfg, req, name)
    share = inp.generator().step("share")
    p = inp.payload
    if list(p.get("columns") or []) != inp.spec.names:
        raise ValueError(f"synth_share: requested columns {p.get('columns')} are not this run's "
                         f"generated columns {inp.spec.names}")
    n_rows = p.get("n_rows")
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"synth_share: n_rows={n_rows!r} must be a positive integer")
    out = share.node(p, inp.train, inp.hold, inp.seed("share"))
    metrics = {**inp.counts, "gate_passed": 1.0 if out["passed"] else 0.0,
               "n_shared": float(n_rows if out["passed"] else 0)}
    for c in out["gate"]["checks"]:
        metrics[f"gate_{c['name']}_threshold"] = float(c["threshold"])
        if c["measured"] is not None:  # not measured = failed, shown as missing
            metrics[f"gate_{c['name']}"] = float(c["measured"])
            metrics[f"gate_{c['name']}_margin"] = float(c["margin"])
    if not out["passed"]:
        return make_reply(name, None, metrics)
    return make_reply(name, {"rows": rows_to_payload(pd.DataFrame(out["rows"]), inp.spec)}, metrics)
