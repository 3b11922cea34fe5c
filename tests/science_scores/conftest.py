from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _read(*parts, **kw):
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data test: {path} is absent (../shared/data not laid beside the repo)")
    return pd.read_csv(path, **kw)


@pytest.fixture(scope="session")
def golden():
    """2,648 IWG-PM patients with IPSS-M inputs and reference outputs (papaemmelab/ipssm-api)."""
    return _read("ipssm_reference", "Bernard_et_all_2022_NJEM_Evid.csv")


@pytest.fixture(scope="session")
def r_example():
    """3 cases with missing values from the ipssm R package (inst/extdata/IPSSMexample.csv)."""
    return _read("ipssm_reference", "IPSSMexample_Rpkg.csv", encoding="utf-8-sig")


@pytest.fixture(scope="session")
def iwgpm_clinical():
    return _read("mds_iwgpm", "df_clinical.tsv", sep="\t")
