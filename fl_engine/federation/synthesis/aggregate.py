"""What the manager makes of the replies of each synth_* kind (the aggregations synthesis.kinds
registers). Replies come by node name, in name order; `SynthesisRun` is the manager's state of
the run they fold into."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from fl_engine.federation.config import RunConfig
from fl_engine.federation.core import NodeReply
from fl_engine.federation.protocol import Aggregation
from fl_engine.federation.synthesis.codec import payload_to_rows, reply_payload
from generative import FederatedGenerator, SafeConfig, TableSpec, manager_merge_summaries, manager_pool
from generative.sd_sharing import failed_checks

log = logging.getLogger("fedhaem.federation")


@dataclass
class SynthesisRun:
    """The manager's state of a synthesis run: its config and spec, the generator trained across
    nodes (once the summaries are merged) and the cohort of the round being validated."""

    cfg: RunConfig
    spec: TableSpec
    fed: FederatedGenerator | None = None
    synthetic: pd.DataFrame | None = None


def merge_summaries(replies: dict[str, NodeReply], run: SynthesisRun) -> dict:
    """synth_summary: the global column summary (generative.transform)."""
    return manager_merge_summaries([reply_payload(r) for r in replies.values()], run.spec, seed=run.cfg.seed)


def into_generator(step: str) -> Aggregation:
    """A generator step's replies: their payloads, folded into the run's generator."""
    def aggregate(replies: dict[str, NodeReply], run: SynthesisRun) -> None:
        run.fed.step(step).aggregate({n: reply_payload(r) or {} for n, r in replies.items()})
    return aggregate


def pool_shares(replies: dict[str, NodeReply], run: SynthesisRun) -> None:
    """synth_share: the rows of the nodes whose gate passed, pooled (ValueError naming every
    node's failed checks when none passed)."""
    answers = {n: _share(r, run.spec) for n, r in replies.items()}
    run.fed.step("share").aggregate(answers)
    log.info("sd_sharing: %d rows pooled from %d of %d nodes",
             sum(len(a["rows"]) for a in answers.values() if a["passed"]), sum(a["passed"] for a in answers.values()),
             len(answers))


def pool_validation(replies: dict[str, NodeReply], run: SynthesisRun) -> tuple[dict, dict[str, dict]]:
    """synth_validate: (the pooled SAFE report of the round's cohort, each node's report)."""
    reps = {n: reply_payload(r) for n, r in replies.items()}
    return manager_pool(list(reps.values()), run.synthetic, run.spec, SafeConfig(seed=run.cfg.seed)), reps


def _share(reply: NodeReply, spec: TableSpec) -> dict:
    """A synth_share reply as the generator's answer {"n", "passed", "rows", "failed"}."""
    passed = reply.metrics.get("gate_passed") == 1
    rows = (reply_payload(reply) or {}).get("rows") if passed else None
    return {"n": int(reply.metrics.get("n_train", 0)), "passed": passed and rows is not None,
            "rows": payload_to_rows(rows, spec) if rows is not None else None,
            "failed": failed_checks(gate_checks(reply.metrics))}


def gate_checks(metrics: dict) -> list[dict]:
    """The gate checks a synth_share reply reports as scalars, by name: [{"name", "measured",
    "threshold", "margin"}] (measured and margin None when not measured)."""
    names = [k[len("gate_"):-len("_threshold")] for k in sorted(metrics)
             if k.startswith("gate_") and k.endswith("_threshold")]
    return [{"name": n, "threshold": metrics[f"gate_{n}_threshold"], "measured": metrics.get(f"gate_{n}"),
             "margin": metrics.get(f"gate_{n}_margin")} for n in names]
