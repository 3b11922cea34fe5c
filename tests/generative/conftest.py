import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def spec():
    from generative.toy import toy_spec

    return toy_spec()


@pytest.fixture(scope="session")
def cohort():
    from generative.toy import toy_cohort

    return toy_cohort(360, seed=1)


@pytest.fixture(scope="session")
def nodes(cohort):
    """Three nodes 60/30/10 of (train, holdout), 80/20 within each node."""
    out, start = [], 0
    for size in (216, 108, 36):
        part = cohort.iloc[start:start + size].reset_index(drop=True)
        start += size
        cut = int(size * 0.8)
        out.append((part.iloc[:cut].reset_index(drop=True), part.iloc[cut:].reset_index(drop=True)))
    return out
