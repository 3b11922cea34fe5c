"""The analysis study (issue 17): cohort description, Kaplan-Meier with log-rank, exact Cox,
computed across hospitals from aggregates only. Message kinds in `kinds` (registered in
fl_engine.federation.protocol.PROVIDERS), the manager's driver in `driver`."""
from __future__ import annotations


def run_analysis(cfg, transport, sink=None) -> dict:
    """fl_engine.federation.analysis.driver.run_analysis (imported when first used)."""
    from fl_engine.federation.analysis.driver import run_analysis as _run

    return _run(cfg, transport, sink)


__all__ = ["run_analysis"]
