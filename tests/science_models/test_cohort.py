import numpy as np
import pandas as pd
import pytest

from fl_engine.cohort import generate_mds_cohort, split_nodes
from fl_engine.features import Preprocessor
from fedhaem_kernel.metrics.concordance import harrell_c
from fedhaem_kernel.schema import MDS


@pytest.fixture(scope="module")
def cohort():
    return generate_mds_cohort(4000, seed=0)


def test_schema_columns_and_types(cohort):
    for f in MDS.features:
        assert f.name in cohort
        if cohort[f.name].isna().all():  # fields the generator does not model stay missing
            assert f.name in ("ecog", "therapy_related"), f.name
            continue
        if f.kind == "binary":
            assert set(cohort[f.name].dropna().unique()) <= {0.0, 1.0}, f.name
        if f.kind == "numeric" and f.minimum is not None:
            v = cohort[f.name].dropna()
            assert v.min() >= f.minimum and v.max() <= f.maximum, f.name
    assert set(cohort.cyto_ipssr.dropna()) <= set(MDS.feature("cyto_ipssr").categories)
    assert cohort.patient_id.is_unique


@pytest.mark.parametrize("gene,lo,hi", [("SF3B1", 0.18, 0.27), ("TET2", 0.25, 0.36),
                                        ("ASXL1", 0.19, 0.30), ("SRSF2", 0.11, 0.19),
                                        ("DNMT3A", 0.12, 0.20), ("RUNX1", 0.08, 0.16),
                                        ("TP53", 0.08, 0.14), ("complex", 0.06, 0.12)])
def test_frequencies(cohort, gene, lo, hi):
    assert lo <= cohort[gene].mean() <= hi


def test_co_occurrence(cohort):
    d = cohort.dropna(subset=["TP53", "complex", "SRSF2", "TET2", "SF3B1"])
    assert d.complex[d.TP53 == 1].mean() > 4 * d.complex[d.TP53 == 0].mean()
    assert d.TET2[d.SRSF2 == 1].mean() > 1.5 * d.TET2[d.SRSF2 == 0].mean()
    # splicing genes nearly exclusive, ring sideroblasts follow SF3B1
    assert (d.SF3B1 * d.SRSF2).mean() < 0.01
    rs = cohort.dropna(subset=["ring_sideroblasts", "SF3B1"])
    assert rs.ring_sideroblasts[rs.SF3B1 == 1].median() >= 15 > rs.ring_sideroblasts[rs.SF3B1 == 0].median()


def test_censoring_and_endpoints(cohort):
    assert 0.35 <= cohort.os_event.mean() <= 0.65
    assert 0.05 <= cohort.amlt_event.mean() <= 0.25
    assert (cohort.lfs_months <= cohort.os_months + 1e-9).all()
    assert (cohort.os_months > 0).all()
    # LFS events include every OS event that came first and every AML
    assert (cohort.lfs_event >= cohort.amlt_event).all()


def test_missing_values_like_an_export(cohort):
    assert 0.12 < cohort.pb_blast.isna().mean() < 0.26
    assert cohort.TP53.isna().mean() > 0.005
    assert cohort.patient_id.notna().all() and cohort.os_months.notna().all()


def test_cox_reaches_plausible_c(cohort):
    lifelines = pytest.importorskip("lifelines")
    cols = [f.name for f in MDS.features if f.group != "therapy"]
    train, test = cohort.iloc[:3000], cohort.iloc[3000:]
    pre = Preprocessor.fit("MDS", train, cols)
    xtr = pd.DataFrame(pre.transform(train), columns=pre.output_names)
    keep = xtr.columns[xtr.std() > 0]
    xtr = xtr[keep].assign(T=train.os_months.to_numpy(), E=train.os_event.to_numpy())
    cph = lifelines.CoxPHFitter(penalizer=0.05).fit(xtr, "T", "E")
    xte = pd.DataFrame(pre.transform(test), columns=pre.output_names)[keep]
    c = harrell_c(test.os_months, test.os_event, cph.predict_partial_hazard(xte).to_numpy())
    assert 0.66 <= c <= 0.82


def test_determinism():
    a = generate_mds_cohort(300, seed=7)
    b = generate_mds_cohort(300, seed=7)
    c = generate_mds_cohort(300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.drop(columns="patient_id").equals(c.drop(columns="patient_id"))


def test_split_nodes(cohort):
    parts = split_nodes(cohort, (0.45, 0.2, 0.15, 0.1, 0.1), seed=3)
    assert sum(len(p) for p in parts) == len(cohort)
    ids = pd.concat([p.patient_id for p in parts])
    assert ids.is_unique
    assert abs(len(parts[0]) / len(cohort) - 0.45) < 0.01
    for p in parts:
        assert abs(p.os_event.mean() - cohort.os_event.mean()) < 0.02
    with pytest.raises(ValueError, match="sum to 1"):
        split_nodes(cohort, (0.5, 0.2))
