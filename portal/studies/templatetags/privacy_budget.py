"""`{% run_privacy_spend run as spend %}`: what a run is expected to charge to each hospital's
privacy ledger, by the accountant the nodes use (fl_engine.federation.privacy), from the run's
settings snapshot; `{% run_recorded_spend run as recorded %}`: what each hospital's node recorded
(the ledgers are the record; the nodes report them in their heartbeats)."""
from django import template

from fl_engine.federation.privacy import DEFAULT_RUN_DELTA, dp_fedavg_epsilon
from portal.nodes.selectors import recorded_run_spend

register = template.Library()


@register.simple_tag
def run_privacy_spend(run) -> dict:
    """{"dp": bool, "epsilon", "delta", "delta_text", "rounds", "noise_multiplier"} of a survival run from its config snapshot."""
    p = (run.config or {}).get("privacy") or {}
    if run.kind != "survival" or not p.get("dp_enabled"):
        return {"dp": False}
    try:
        z, rounds = float(p.get("dp_noise_multiplier")), int(run.rounds)
    except (TypeError, ValueError):
        return {"dp": False}
    return {"dp": True, "epsilon": dp_fedavg_epsilon(z, rounds, DEFAULT_RUN_DELTA), "delta": DEFAULT_RUN_DELTA,
            "delta_text": f"{DEFAULT_RUN_DELTA:g}",
            "rounds": rounds, "noise_multiplier": z}


@register.simple_tag
def run_recorded_spend(run) -> list[dict]:
    """Per hospital of `run`: what its node recorded for this run in its ledger, as the node last
    reported it in its heartbeat (portal.nodes.selectors.recorded_run_spend)."""
    return recorded_run_spend(run)
