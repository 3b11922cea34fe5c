"""Which schema fields each conventional score reads, found by asking the scores themselves: on a
table of every field of a use case (generated, fixed seed), a field is an input of a score when
blanking it changes that score for some patient. Nothing is listed twice, so docs/schema.md
(fl_engine.scores.schema_doc) cannot drift from the scoring code.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import get_schema

from .conventional import LABELS, conventional_risks

_N = 600


def _table(use_case: str, seed: int = 0) -> pd.DataFrame:
    """Every field of `use_case` filled with values in its range (lesions in ~15% of patients)."""
    rng = np.random.default_rng(seed)
    out = {}
    for f in get_schema(use_case).features:
        if f.kind == "categorical":
            out[f.name] = rng.choice(list(f.categories), _N)
        elif f.kind == "binary":
            out[f.name] = (rng.random(_N) < 0.15).astype(float)
        else:
            lo = 0.0 if f.minimum is None else float(f.minimum)
            hi = lo + 100.0 if f.maximum is None else float(f.maximum)
            whole = f.unit in ("1", "{count}", "{score}") and hi > 1  # counts and scales: integers
            values = rng.uniform(lo, min(hi, lo + 4.0) + 1 if whole else hi, _N)
            out[f.name] = np.floor(values) if whole else values
    return pd.DataFrame(out)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(a[~np.isnan(a)], b[~np.isnan(b)]))


@lru_cache(maxsize=None)
def score_inputs(use_case: str) -> dict[str, tuple[str, ...]]:
    """{score label (e.g. "IPSS-M"): the fields it reads, in schema order} for `use_case`."""
    df = _table(use_case)
    base = conventional_risks(df, use_case)
    used: dict[str, list[str]] = {LABELS[name]: [] for name in base}
    for f in get_schema(use_case).features:
        blank = df.copy()
        blank[f.name] = np.nan
        after = conventional_risks(blank, use_case)
        for name, risk in base.items():
            if name not in after or not _same(risk, after[name]):
                used[LABELS[name]].append(f.name)
    return {label: tuple(fields) for label, fields in used.items()}


def used_by(use_case: str) -> dict[str, tuple[str, ...]]:
    """{field: the labels of the scores that read it} for `use_case` (fields no score reads are absent)."""
    out: dict[str, list[str]] = {}
    for label, fields in score_inputs(use_case).items():
        for name in fields:
            out.setdefault(name, []).append(label)
    return {k: tuple(v) for k, v in out.items()}
