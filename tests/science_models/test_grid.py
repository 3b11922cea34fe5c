import numpy as np
import pandas as pd
import pytest

from fl_engine.cohort import generate_mds_cohort, split_nodes
from fl_engine.experiments import grid
from fedhaem_kernel.schema import MDS


@pytest.fixture(scope="module")
def small():
    return generate_mds_cohort(600, seed=3)


def test_degrade_drops_groups_and_adds_missing(small):
    parts = split_nodes(small, (0.6, 0.3, 0.1), seed=0)
    worse = grid.degrade(parts, grid.WORST_CASE_DROPS[3], "MDS", 0.15, seed=0)
    assert not set(MDS.group("genomic")) & set(worse[1].columns)
    assert not set(MDS.group("cytogenetic")) & set(worse[2].columns)
    assert set(MDS.group("genomic")) <= set(worse[0].columns)
    before, after = parts[0].hb.isna().mean(), worse[0].hb.isna().mean()
    assert 0.08 < after - before < 0.25


def test_evaluate_bootstrap_interval_contains_point():
    rng = np.random.default_rng(0)
    d = rng.exponential(10, 200)
    e = (rng.random(200) < 0.6).astype(float)
    r = -d + rng.normal(0, 5, 200)
    res = grid.evaluate(d, e, r, n_boot=100, seed=1)
    assert res["harrell_lo"] <= res["harrell_c"] <= res["harrell_hi"]
    assert res["harrell_c"] > 0.6 and res["n"] == 200


def test_evaluate_integrated_brier_against_the_kaplan_meier_reference():
    rng = np.random.default_rng(2)
    n = 400
    x = rng.normal(size=n)
    rate = 0.05 * np.exp(1.2 * x)
    t, c = rng.exponential(1 / rate), rng.uniform(5, 60, n)
    d, e = np.minimum(t, c), (t <= c).astype(float)
    train, test = np.arange(300), np.arange(300, n)
    grid_t = np.unique(d[train][e[train] > 0])
    true = np.exp(-rate[test, None] * grid_t[None, :])  # the data's own survival curves
    res = grid.evaluate(d[test], e[test], rate[test], true, grid_t, (d[train], e[train]))
    assert 0 < res["ibs"] < res["ibs_km"] < 0.25
    # the Kaplan-Meier curve itself as the "model" scores exactly the reference
    km_t, km_s = grid.kaplan_meier(d[train], e[train])
    flat = np.repeat(grid.step_at(km_t, km_s, grid_t)[None, :], len(test), axis=0)
    same = grid.evaluate(d[test], e[test], rate[test], flat, grid_t, (d[train], e[train]))
    assert same["ibs"] == pytest.approx(same["ibs_km"], abs=1e-12)
    # a reversed model is worse than no model
    bad = grid.evaluate(d[test], e[test], rate[test], true[::-1], grid_t, (d[train], e[train]))
    assert bad["ibs"] > bad["ibs_km"]
    ts = grid.brier_times(d[test], e[test])
    assert ts.max() <= np.quantile(d[test][e[test] > 0], 0.9) and len(ts) >= 10
    assert len(grid.brier_times(d[test], np.zeros(len(test)))) == 0


@pytest.mark.slow
def test_grid_runs_every_setting_through_the_executor(small, tmp_path):
    cfg = grid.GridConfig(rounds=2, seeds=(0,), federations=(3,), n_boot=20)
    results, rounds, extras = grid.run_grid(small, cfg, log=lambda m: None)
    settings = set(results.setting)
    assert {"centralised", "federated_3", "isolated_3", "ipss_m", "ipss_r"} <= settings
    assert set(results.case) == {"best", "worst"}
    c = results.harrell_c.dropna()
    assert ((c >= 0) & (c <= 1)).all() and len(c) > 10
    models = results[results.setting.str.match(r"(centralised|federated|isolated)")]
    assert models.ibs.notna().all() and ((models.ibs > 0) & (models.ibs < 0.5)).all()
    assert (models.ibs_km > 0).all() and results[results.setting.str.startswith("ipss")].ibs.isna().all()
    fed = results[(results.setting == "federated_3") & (results.case == "best")]
    assert set(fed["eval"]) == {"global", "node1", "node2", "node3"}
    # node test sets partition the global test set
    assert fed[fed["eval"] != "global"].n.sum() == fed[fed["eval"] == "global"].n.iloc[0]
    assert set(rounds[~rounds.setting.str.startswith("cox_")]["round"]) == {1, 2}
    assert set(rounds[rounds.setting.str.startswith("cox_")]["round"]) == set(range(1, grid.COX_ROUNDS + 1))
    summary = grid.summarise(results)
    md = grid.to_markdown(summary)
    assert md.count("\n") == len(summary) + 2
    written = grid.write_plots(tmp_path, summary, rounds, extras, cfg)
    assert {p.name for p in written} >= {"c_per_round.html", "centralised_vs_federated.html",
                                         "km_by_risk_group.html"}
    assert all(p.stat().st_size > 1000 for p in written)


def test_federate_single_node_is_deterministic(small):
    cfg = grid.GridConfig(rounds=2)
    a = grid._federate({"central": small}, cfg, seed=1)
    b = grid._federate({"central": small}, cfg, seed=1)
    x = a.preprocessor.transform(small.head(20))
    np.testing.assert_allclose(a.model.predict_risk(x), b.model.predict_risk(x))
    assert np.isfinite(a.model.predict_survival(x, np.array([12.0, 24.0]))).all()


@pytest.mark.slow
def test_cli_writes_tables(tmp_path):
    rc = grid.main(["--cohort", "generated", "--n", "500", "--out", str(tmp_path), "--seeds", "1",
                    "--rounds", "1", "--federations", "3", "--cases", "best", "--no-isolated",
                    "--n-boot", "10"])
    assert rc == 0
    s = pd.read_csv(tmp_path / "summary.csv")
    assert {"centralised", "federated_3"} <= set(s.setting)
    assert (tmp_path / "summary.md").read_text().startswith("| setting")


def test_unknown_cohort_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        grid.load_cohort(str(tmp_path / "nope.csv"))


@pytest.mark.slow
def test_savae_through_the_grid_gets_preprocessor_kinds(small):
    cfg = grid.GridConfig(model="savae", model_params={"time_scale": 24.0, "val_fraction": 0.0},
                          rounds=2, seeds=(0,), federations=(3,), cases=("worst",),
                          isolated=False, n_boot=0, scores=False, baselines=())
    results, _, _ = grid.run_grid(small, cfg, log=lambda m: None)
    c = results[results["eval"] == "global"].harrell_c
    assert len(c) == 2 and c.between(0.4, 1.0).all()


def _aml_cohort(n: int, seed: int) -> pd.DataFrame:
    """An AML table in the schema's columns whose hazard follows the ELN 2022 lesions (adverse
    TP53 / complex, favourable NPM1 without FLT3-ITD / CBF) and age."""
    from fedhaem_kernel.schema import get_schema

    rng = np.random.default_rng(seed)
    schema = get_schema("AML")
    df = pd.DataFrame({"age": rng.uniform(20, 85, n), "sex": rng.choice(["F", "M"], n),
                       "hb": rng.uniform(6, 14, n), "plt": rng.uniform(10, 300, n),
                       "anc": rng.uniform(0.1, 5, n), "wbc": rng.uniform(1, 80, n),
                       "bm_blast": rng.uniform(20, 95, n), "pb_blast": rng.uniform(0, 80, n)})
    # lesions at rough AML frequencies: the ones in the hazard below common, the rest rare (at 8%
    # each, two thirds of the patients carried some adverse lesion unrelated to their hazard)
    common = {"NPM1": 0.30, "FLT3_ITD": 0.25, "TP53": 0.10, "complex": 0.12, "t_8_21": 0.06, "inv16": 0.06}
    for f in schema.features:
        if f.kind == "binary" and f.group in ("cytogenetic", "genomic"):
            df[f.name] = (rng.random(n) < common.get(f.name, 0.02)).astype(float)
    lp = (0.03 * (df.age - 60) + 1.2 * df.TP53 + 0.9 * df.complex
          - 1.0 * df.NPM1 * (1 - df.FLT3_ITD) - 0.8 * df.t_8_21 - 0.8 * df.inv16)
    t = rng.exponential(24 * np.exp(-lp))
    c = rng.uniform(6, 72, n)
    df["os_months"], df["os_event"] = np.minimum(t, c), (t <= c).astype(int)
    return df


@pytest.mark.slow
def test_grid_scores_the_use_cases_own_conventional_score(tmp_path):
    # The grid is not MDS-only: on an AML table the conventional score is ELN 2022, scored on
    # the same test rows, and the Kaplan-Meier figure groups patients by its categories.
    df = _aml_cohort(900, seed=5)
    cfg = grid.GridConfig(use_case="AML", rounds=2, seeds=(0,), federations=(3,), cases=("best",),
                          isolated=False, n_boot=0)
    results, rounds, extras = grid.run_grid(df, cfg, log=lambda m: None)
    assert {"centralised", "federated_3", "eln2022"} <= set(results.setting)
    assert not {"ipss_m", "ipss_r"} & set(results.setting)
    eln = results[results.setting == "eln2022"].iloc[0]
    # the test rows' APL patients (t(15;17), drawn like every lesion) are outside ELN 2022's groups
    assert eln.n_total == 90 and 81 <= eln.n <= 90 and eln.coverage_ok
    assert 0.55 < eln.harrell_c < 1  # lesions drive the hazard, so ELN ranks
    assert set(extras["groups"]) == {"ELN 2022"}
    assert set(extras["groups"]["ELN 2022"]) <= {"Favorable", "Intermediate", "Adverse", ""}
    written = grid.write_plots(tmp_path, grid.summarise(results), rounds, extras, cfg)
    assert "ELN 2022" in (tmp_path / "km_by_risk_group.html").read_text() and written


def test_risk_tertiles_by_rank_even_with_ties_and_nan():
    # All-equal risks would collapse value quantiles into one group; ranks still give thirds.
    t = grid.risk_tertiles([0.2] * 9 + [np.nan])
    assert t[-1] is None
    assert [list(t[:9]).count(label) for label in grid.RISK_TERTILES] == [3, 3, 3]
    t = grid.risk_tertiles([3.0, 1.0, 2.0])
    assert list(t) == [grid.RISK_TERTILES[2], grid.RISK_TERTILES[0], grid.RISK_TERTILES[1]]
    assert grid.risk_tertiles([np.nan]).tolist() == [None]
