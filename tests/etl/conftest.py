from pathlib import Path

import pytest

# <repo>/../shared/data
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
IWGPM = SHARED_DATA / "mds_iwgpm"


@pytest.fixture(scope="session")
def iwgpm_dir() -> Path:
    if not (IWGPM / "df_clinical.tsv").exists():
        pytest.skip(f"IWG-PM cohort not found at {IWGPM} (needs ../shared/data)")
    return IWGPM


@pytest.fixture(scope="session")
def iwgpm_etl(iwgpm_dir, tmp_path_factory):
    """One full ETL run of the IWG-PM cohort, shared by the real-data tests."""
    from etl.pipeline import run_etl
    out = tmp_path_factory.mktemp("iwgpm_out")
    return run_etl("mds", [iwgpm_dir], out)
