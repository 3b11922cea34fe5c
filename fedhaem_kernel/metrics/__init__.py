"""Survival metrics (pure numpy). Times in any unit, consistent within a call.

Concordance: ``harrell_c``, ``uno_c``, ``antolini_c``. Calibration/accuracy: ``brier_score``,
``integrated_brier_score``. Uncertainty: ``bootstrap_ci``. Curves and tests: ``kaplan_meier``,
``logrank_test``. Survival matrices are (n_times, n_patients), as in pycox.
"""
from .bootstrap import Interval, bootstrap_ci
from .brier import brier_score, integrated_brier_score
from .concordance import antolini_c, harrell_c, uno_c
from .km import LogRankResult, censoring_km, kaplan_meier, logrank_test, step_at

__all__ = [
    "Interval", "LogRankResult", "antolini_c", "bootstrap_ci", "brier_score", "censoring_km",
    "harrell_c", "integrated_brier_score", "kaplan_meier", "logrank_test", "step_at", "uno_c",
]
