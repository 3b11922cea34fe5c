"""The analysis study (issue 17): cohort description, Kaplan-Meier with log-rank, exact Cox,
computed across hospitals from aggregates only. Message kinds in `kinds` (registered in
fl_engine.federation.protocol.PROVIDERS), the manager's driver in `driver`."""
from __future__ import annotations

from fl_engine.federation.analysis.driver import ANALYSIS_FILE, run_analysis

__all__ = ["ANALYSIS_FILE", "run_analysis"]
