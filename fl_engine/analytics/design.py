"""The Cox design matrix of an analysis: covariates encoded the same way at every hospital, from
the schema alone (no statistic of the data is needed, so no extra exchange).

Numeric covariate: (x - minimum) / (maximum - minimum) of the schema's range (a fixed linear
rescaling for Newton's numerics; coefficients and standard errors are reported back per unit of
the column, exactly as a fit on the raw column gives). Binary: 0 / 1. Categorical: one indicator
per category but the first (the reference). Rows with a missing covariate are left out (complete
cases); a hospital counts them but does not send that count below the small-cell threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import UseCaseSchema


@dataclass(frozen=True)
class Term:
    """One column of the design: `name` as reported, the table `column`, its kind, the scale
    (lo, hi) of a numeric column or the `level` of a categorical indicator."""

    name: str
    column: str
    kind: str
    lo: float = 0.0
    hi: float = 1.0
    level: str = ""

    @property
    def scale(self) -> float:
        return (self.hi - self.lo) if self.kind == "numeric" else 1.0


def design_terms(schema: UseCaseSchema, covariates: list[str]) -> list[Term]:
    out: list[Term] = []
    for c in covariates:
        f = schema.feature(c)
        if f.kind == "numeric":
            lo = 0.0 if f.minimum is None else float(f.minimum)
            hi = lo + 1.0 if f.maximum is None or float(f.maximum) <= lo else float(f.maximum)
            out.append(Term(c, c, "numeric", lo, hi))
        elif f.kind == "binary":
            out.append(Term(c, c, "binary"))
        else:
            out += [Term(f"{c}={lvl}", c, "categorical", level=lvl) for lvl in f.categories[1:]]
    return out


def design_matrix(df: pd.DataFrame, terms: list[Term], raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(x (n_complete, p), mask of the complete rows (n,)). `raw`: numeric columns unscaled (the
    oracle's design)."""
    n = len(df)
    cols = []
    complete = np.ones(n, dtype=bool)
    for t in terms:
        if t.column not in df:
            v = np.full(n, np.nan)
            complete &= False
        elif t.kind == "categorical":
            s = df[t.column].astype("object")
            ok = s.notna().to_numpy()
            complete &= ok
            v = (s == t.level).to_numpy(dtype=np.float64)
        else:
            v = pd.to_numeric(df[t.column], errors="coerce").to_numpy(dtype=np.float64)
            complete &= np.isfinite(v)
            if t.kind == "numeric" and not raw:
                v = (v - t.lo) / t.scale
        cols.append(v)
    x = np.column_stack(cols) if cols else np.zeros((n, 0))
    return x[complete], complete


def unscale(terms: list[Term], coef: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and covariance of the scaled design -> per unit of each column."""
    s = np.array([t.scale for t in terms])
    return coef / s, cov / np.outer(s, s)
