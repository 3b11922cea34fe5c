import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"public cohorts not found at {DATA} (a clone outside the workspace)")
    return DATA


@pytest.fixture(autouse=True)
def _one_thread():
    import torch
    torch.set_num_threads(1)
