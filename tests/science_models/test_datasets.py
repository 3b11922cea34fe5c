import numpy as np
import pytest

from fl_engine.datasets.classic import CLASSIC_DATASETS, ClassicEncoder, load_classic
from fl_engine.datasets.iwgpm import load_iwgpm
from fedhaem_kernel.schema import MDS

pytestmark = pytest.mark.realdata


def test_iwgpm_loader(shared_data):
    df = load_iwgpm(shared_data / "mds_iwgpm")
    assert len(df) == 2957 and df.patient_id.is_unique
    for f in MDS.features:
        assert f.name in df
    assert set(df.cyto_ipssr.dropna()) <= set(MDS.feature("cyto_ipssr").categories)
    # years -> months
    assert 20 < df.os_months.median() < 25
    assert df.os_event.dropna().isin([0, 1]).all()
    assert abs(df.SF3B1.mean() - 0.239) < 0.01 and abs(df.TP53.mean() - 0.110) < 0.01
    assert (df.tp53_count[df.TP53 == 1] >= 1).all() and (df.tp53_count[df.TP53 == 0] == 0).all()
    assert {"ipssm_score", "ipssr_score", "ipssm", "ipssr"} <= set(df)


def test_iwgpm_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="df_clinical.tsv"):
        load_iwgpm(tmp_path)


@pytest.mark.parametrize("name", CLASSIC_DATASETS)
def test_classic_loader(shared_data, name):
    x, d, e = load_classic(name, shared_data / "survival_benchmarks")
    assert len(x) == len(d) == len(e) > 400
    assert set(np.unique(e)) <= {0.0, 1.0} and (d >= 0).all()
    enc = ClassicEncoder.fit(x)
    xi, kinds = enc.transform(x, impute=True)
    assert xi.shape[0] == len(x) and xi.shape[1] == len(kinds) and not np.isnan(xi).any()


def test_classic_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown classic"):
        load_classic("nope", tmp_path)
