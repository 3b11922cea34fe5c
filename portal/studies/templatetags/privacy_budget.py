"""`{% run_privacy_spend run as spend %}`: what a run charged to each hospital's privacy ledger,
by the accountant the nodes use (fl_engine.federation.privacy); the nodes' ledgers are the record."""
from django import template

from fl_engine.federation.privacy import DEFAULT_RUN_DELTA, dp_fedavg_epsilon

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
