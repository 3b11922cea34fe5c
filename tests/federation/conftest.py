import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

NODE_NAMES = ("H1", "H2", "H3")


def _cohort(n: int, seed: int) -> pd.DataFrame:
    try:
        from fl_engine.cohort import generate_mds_cohort
    except ImportError:
        return _small_cohort(n, seed)
    df = generate_mds_cohort(n, seed=seed)
    return df[df["age"].notna()].reset_index(drop=True)  # the registry requires age


def _small_cohort(n: int, seed: int) -> pd.DataFrame:
    """Fallback generator in the MDS schema (a few columns, proportional hazards)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "patient_id": [f"P{i}" for i in range(n)],
        "age": rng.normal(70, 10, n), "hb": rng.normal(10, 2, n),
        "bm_blast": rng.gamma(2, 3, n), "TP53": rng.integers(0, 2, n).astype(float),
        "sex": rng.choice(["F", "M"], n),
    })
    risk = 0.04 * (df.age - 70) - 0.2 * (df.hb - 10) + 0.08 * df.bm_blast + 0.9 * df.TP53
    t = rng.exponential(40 * np.exp(-risk))
    c = rng.uniform(6, 120, n)
    df["os_months"] = np.minimum(t, c)
    df["os_event"] = (t <= c).astype(int)
    return df


def split_60_30_10(df: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    idx = np.random.default_rng(seed).permutation(len(df))
    a, b = int(0.6 * len(df)), int(0.9 * len(df))
    parts = [idx[:a], idx[a:b], idx[b:]]
    return {name: df.iloc[np.sort(p)].reset_index(drop=True) for name, p in zip(NODE_NAMES, parts)}


@pytest.fixture(scope="session")
def node_tables() -> dict[str, pd.DataFrame]:
    return split_60_30_10(_cohort(400, seed=3))
