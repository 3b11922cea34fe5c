import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def make_cohort(n: int, seed: int, *, tied: bool = True):
    """Synthetic survival data with a risk that carries some signal; times in months."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    event_t = rng.exponential(20 * np.exp(-0.7 * x))
    cens_t = rng.exponential(30, size=n)
    t = np.minimum(event_t, cens_t)
    e = (event_t <= cens_t).astype(int)
    risk = x + rng.normal(scale=0.5, size=n)
    if tied:
        t = np.round(t)  # whole months: ties in time
        risk = np.round(risk, 1)  # ties in risk
    return t, e, risk, x


@pytest.fixture
def gbsg():
    path = DATA / "survival_benchmarks" / "gbsg.csv"
    if not path.exists():
        pytest.skip(f"real benchmark absent: {path} (../shared/data not laid beside the repo)")
    import pandas as pd
    return pd.read_csv(path)
