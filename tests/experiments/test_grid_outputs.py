"""The experiment grid's inputs and outputs: an ETL output folder as the cohort, seeds written as
they finish, --resume, --seeds lists, the Cox baseline and per-hospital conventional scores with
their coverage. The grid runs the Cox model here (exact Newton steps: seconds, no torch training)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from etl.pipeline import run_etl
from fl_engine.experiments import grid
from fl_engine.experiments.store import GridStoreError, atomic_write, parse_seeds, read_seed, written_seeds

CYTO = ["Very Good", "Good", "Intermediate", "Poor", "Very Poor"]


def _cohort(n: int = 400, seed: int = 0, cyto_missing: float = 0.0) -> pd.DataFrame:
    """MDS patients in schema names and units whose hazard follows IPSS-R's inputs (months)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "patient_id": [f"P{seed}-{i:04d}" for i in range(n)],
        "age": rng.integers(40, 90, n).astype(float), "sex": rng.choice(["M", "F"], n),
        "hb": rng.normal(9.8, 1.6, n).round(1).clip(4, 16),
        "plt": rng.integers(10, 500, n).astype(float),
        "anc": rng.gamma(2.0, 1.0, n).round(2).clip(0.05, 20),
        "bm_blast": rng.integers(0, 19, n).astype(float),
        "cyto_ipssr": rng.choice(CYTO, n, p=[0.05, 0.6, 0.2, 0.1, 0.05]),
        "TP53": (rng.random(n) < 0.1).astype(float), "SF3B1": (rng.random(n) < 0.2).astype(float),
    })
    lp = (0.03 * (df.age - 70) - 0.25 * (df.hb - 10) + 0.08 * df.bm_blast + 0.9 * df.TP53
          + 0.5 * df.cyto_ipssr.map(dict(zip(CYTO, range(5)))) - 0.4 * df.SF3B1 - 0.002 * df.plt)
    t = rng.exponential(40 * np.exp(-lp))
    c = rng.uniform(6, 120, n)
    df["os_months"] = np.minimum(t, c).round(3).clip(0.1)
    df["os_event"] = (t <= c).astype(float)
    df.loc[rng.random(n) < cyto_missing, "cyto_ipssr"] = np.nan
    return df


def _args(cohort, out, *extra):
    return ["--cohort", str(cohort), "--out", str(out), "--model", "cox", "--baselines", "none",
            "--federations", "3", "--cases", "best", "--no-isolated", "--n-boot", "0", "--rounds", "4", *extra]


# --- --seeds ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,seeds", [("5", (0, 1, 2, 3, 4)), ("3,5-9", (3, 5, 6, 7, 8, 9)), ("7,", (7,)),
                                        ("9-9", (9,)), (" 4 , 1-2 ,2", (1, 2, 4))])
def test_seeds_counts_lists_and_ranges(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec,message", [("", "empty"), ("5-3", "runs backwards"), ("a", "'a' is not a seed"),
                                          ("3,,4", "an empty entry"), ("-1", "'-1' is not a seed"),
                                          ("0", "between 1 and"), ("1-5000", "more than 1000 seeds"),
                                          ("2.5", "'2.5' is not a seed")])
def test_malformed_seeds_are_refused_naming_the_part(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(spec)


def test_the_command_line_refuses_bad_seeds_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        grid.main(_args("generated", tmp_path / "out", "--seeds", "4-2"))
    assert err.value.code == 2 and "range '4-2' runs backwards" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- cohort folders ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def etl_output(tmp_path_factory):
    """A real ETL run of a canonical export (the folder `fedhaem-node etl` writes)."""
    d = tmp_path_factory.mktemp("etl")
    _cohort(400, seed=1).to_csv(d / "export.csv", index=False)
    return run_etl("mds", [d / "export.csv"], d / "out")


def test_an_etl_output_folder_is_read_as_the_cohort(etl_output):
    df = grid.load_cohort(str(etl_output.out_dir), "MDS")
    assert len(df) == etl_output.manifest["patient_count"] == 400
    assert set(df.patient_id) == set(etl_output.table.patient_id)
    assert {"os_months", "os_event", "cyto_ipssr"} <= set(df.columns)
    with pytest.raises(ValueError, match=r"manifest says use case MDS, the grid runs AML \(pass --use-case mds\)"):
        grid.load_cohort(str(etl_output.out_dir), "AML")


def test_a_folder_of_neither_layout_names_the_folder_and_what_was_expected(tmp_path):
    (tmp_path / "clinical.xlsx").write_text("x")
    with pytest.raises(ValueError) as err:
        grid.load_cohort(str(tmp_path), "MDS")
    msg = str(err.value)
    assert str(tmp_path) in msg and "manifest.json" in msg and "df_clinical.tsv" in msg and "clinical.xlsx" in msg


def test_an_unfinished_etl_output_is_refused(tmp_path, etl_output):
    (tmp_path / "table.parquet").write_bytes((etl_output.out_dir / "table.parquet").read_bytes())
    with pytest.raises(ValueError, match="manifest.json not found"):
        grid.load_cohort(str(tmp_path), "MDS")
    manifest = json.loads((etl_output.out_dir / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "patient_count": 399}))
    with pytest.raises(ValueError, match="table.parquet has 400 rows, its manifest 399 patients"):
        grid.load_cohort(str(tmp_path), "MDS")


def test_the_grid_runs_on_an_etl_output_folder_from_the_command_line(etl_output, tmp_path):
    out = tmp_path / "grid"
    assert grid.main(_args(etl_output.out_dir, out, "--seeds", "1")) == 0
    s = pd.read_csv(out / "summary.csv")
    assert {"centralised", "federated_3", "ipss_r"} <= set(s.setting)
    assert json.loads((out / "grid.json").read_text())["cohort"]["rows"] == 400


# --- seeds written as they finish, and --resume ------------------------------------------------------

def test_each_seed_is_handed_over_as_soon_as_it_finishes():
    cfg = grid.GridConfig(model="cox", baselines=(), rounds=3, seeds=(4, 7), federations=(3,), cases=("best",),
                          isolated=False, n_boot=0)
    events = []
    grid.run_grid(_cohort(300, 2), cfg, log=lambda m: events.append(("log", m.split(":")[0])),
                  on_seed=lambda seed, rows, rr, ex: events.append(("seed", seed, {r["seed"] for r in rows})))
    done = [i for i, e in enumerate(events) if e[0] == "seed"]
    assert [events[i][1:] for i in done] == [(4, {4}), (7, {7})]
    first_of_7 = next(i for i, e in enumerate(events) if e == ("log", "seed 7"))
    assert done[0] < first_of_7  # seed 4 was written before seed 7 started


def test_resume_skips_written_seeds_and_refuses_other_settings(tmp_path, capsys):
    src = tmp_path / "cohort.csv"
    _cohort(300, 3).to_csv(src, index=False)
    out = tmp_path / "grid"
    assert grid.main(_args(src, out, "--seeds", "0,1")) == 0
    assert written_seeds(out) == [0, 1]
    seed0 = (out / "seeds" / "seed-0.json").read_bytes()
    first = pd.read_csv(out / "results.csv")
    capsys.readouterr()
    assert grid.main(_args(src, out, "--seeds", "0-2", "--resume")) == 0
    err = capsys.readouterr().err
    assert "seed(s) 0, 1 already written" in err and "seed 0:" not in err and "seed 2:" in err
    assert (out / "seeds" / "seed-0.json").read_bytes() == seed0
    res = pd.read_csv(out / "results.csv")
    assert set(res.seed) == {0, 1, 2}
    pd.testing.assert_frame_equal(res[res.seed < 2].reset_index(drop=True), first, check_dtype=False)
    # other settings, another cohort, no --resume: refused, and nothing is written
    assert grid.main(_args(src, out, "--seeds", "0-3", "--resume", "--rounds", "5")) == 2
    assert "rounds: stored 4, now 5" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    _cohort(300, 4).to_csv(other, index=False)
    assert grid.main(_args(other, out, "--seeds", "0-3", "--resume")) == 2
    assert "cohort.fingerprint" in capsys.readouterr().err
    assert grid.main(_args(src, out, "--seeds", "3")) == 2
    assert "already holds a grid (3 seed(s) written: 0, 1, 2); add --resume" in capsys.readouterr().err
    assert written_seeds(out) == [0, 1, 2]
    assert grid.main(_args(src, tmp_path / "empty", "--resume")) == 2
    assert "holds no grid to resume" in capsys.readouterr().err


def test_a_seed_file_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "seed-1.json"
    atomic_write(target, "first")
    with pytest.raises(TypeError):
        atomic_write(target, 42)  # fails while writing: the old file stays, no temporary is left
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["seed-1.json"]
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "seed-5.json").write_text("{half")
    with pytest.raises(GridStoreError, match=r"seed-5.json: cannot be read .*delete it to recompute"):
        read_seed(tmp_path, 5)


# --- per-hospital conventional scores and the Cox baseline -------------------------------------------

def test_each_hospital_gets_its_conventional_score_with_coverage_and_low_coverage_is_flagged():
    df = _cohort(500, 5, cyto_missing=0.4)  # IPSS-R needs the cytogenetic group: ~60 % computable
    cfg = grid.GridConfig(model="cox", baselines=(), rounds=3, seeds=(0,), federations=(3,),
                          cases=("best", "worst"), isolated=False, n_boot=0)
    results, _, _ = grid.run_grid(df, cfg, log=lambda m: None)
    ipssr = results[results.setting.str.startswith("ipss_r")]
    node_rows = ipssr[(ipssr.setting == "ipss_r_3") & (ipssr.case == "best")]
    assert set(node_rows["eval"]) == {"node1", "node2", "node3"}
    model = results[(results.setting == "federated_3") & (results.case == "best")].set_index("eval")
    for _, r in node_rows.iterrows():
        assert r.n_total == model.loc[r["eval"], "n"]  # the hospital's test patients
        assert r.n == pytest.approx(r.coverage * r.n_total) and 0.3 < r.coverage < 0.9
        assert r.coverage_ok == (r.coverage >= 0.8)
    ok = ipssr.coverage_ok.astype(bool)
    assert not ok.all() and ipssr[~ok].note.str.contains("not comparable").all() and ipssr[ok].note.isna().all()
    # worst case: node3 has no cytogenetic columns: IPSS-R is said to be not computable there
    w = ipssr[(ipssr.case == "worst") & (ipssr["eval"] == "node3")].iloc[0]
    assert w.n == 0 and w.n_total > 0 and not w.coverage_ok and np.isnan(w.harrell_c)
    md = grid.to_markdown(grid.summarise(results))
    assert "LOW COVERAGE" in md and md.count("\n") == len(grid.summarise(results)) + 2


def test_full_coverage_is_not_flagged():
    results, _, _ = grid.run_grid(_cohort(400, 6), grid.GridConfig(
        model="cox", baselines=(), rounds=3, seeds=(0,), federations=(3,), cases=("best",), isolated=False,
        n_boot=0), log=lambda m: None)
    scores = results[results.setting.str.startswith("ipss_r")]
    assert len(scores) == 4 and scores.coverage_ok.astype(bool).all() and (scores.coverage == 1).all()
    assert "LOW COVERAGE" not in grid.to_markdown(grid.summarise(results))


@pytest.mark.slow
def test_the_cox_baseline_runs_beside_deepsurv_on_the_same_splits():
    cfg = grid.GridConfig(rounds=2, seeds=(0,), federations=(3,), cases=("best",), isolated=False, n_boot=0)
    results, rounds, _ = grid.run_grid(_cohort(400, 7), cfg, log=lambda m: None)
    settings = set(results.setting)
    assert {"centralised", "cox_centralised", "federated_3", "cox_federated_3"} <= settings
    cox = results[results.setting.str.startswith("cox_")]
    assert (cox.rounds_used == grid.COX_ROUNDS).all() and cox.harrell_c.between(0.55, 1).all()
    ds = results[results.setting == "federated_3"].set_index("eval")
    cx = results[results.setting == "cox_federated_3"].set_index("eval")
    assert (ds.n == cx.n).all()  # the same test patients per hospital
    assert "cox_federated_3" in set(rounds.setting)
