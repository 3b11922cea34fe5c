"""The experiment grid: centralised vs federated vs isolated survival models, best and worst
case, against the conventional score, on the same held-out test sets.

Design (after the GenoMed4All federated MDS study, Asti et al., medRxiv 2025):

- For each seed, a 90/10 train/test split stratified by the event indicator. The training part
  is split over the nodes (3 nodes 60/30/10 or 5 nodes 45/20/15/10/10, stratified) and so is
  the test part, so each node owns a local test set; the global test set is their union and is
  the same for every setting of that seed.
- Settings: ``centralised`` (one table of all training rows), ``federated_3`` / ``federated_5``
  (FedAvg over the nodes) and ``isolated`` (each node alone). Every setting runs through ONE
  function, `_federate`, which calls the in-process executor of the very same Flower
  ServerApp/ClientApp code (`fl_engine.federation.run_in_process`): centralised and isolated
  runs are federations of one node. The executor keeps a held-out split on each node (for the
  per-round C-index) that is not trained on, in every setting alike. The number of rounds
  (epochs, for one node) is chosen per run on those hold-outs (`GridConfig.select_round`):
  FedAvg over unequal nodes progresses more slowly per round than one centralised epoch, so a
  fixed count would favour one setting.
- Best case: every node has every feature group. Worst case: some nodes lack whole feature
  groups (their tables have no such columns; their test rows neither) and every node loses
  extra clinical values at random (`degrade`).
- Conventional scores (IPSS-M, IPSS-R for MDS; the use case's, fl_engine.scores.conventional) on
  the same test rows: on the global test set and on each simulated hospital's test patients,
  with their coverage (computable on n of N patients; NaN risk = not computable, a score whose
  inputs a hospital lacks is computable on 0). A score computed on under 80% of the patients
  (SCORE_COVERAGE_MIN) is flagged in the rows, the log and summary.md: not comparable.
- Baseline: a penalised Cox model (fl_engine.models.cox, exact federated Newton steps) trained
  on the same splits, centralised and federated (settings ``cox_centralised``,
  ``cox_federated_<k>``), unless `baselines` is empty or the grid's model is Cox itself.
- Metrics on the global test set and on each node's test set: Harrell's C (+ Antolini's
  time-dependent C and Uno's C), percentile bootstrap 95% intervals on the global test set.

DeepSurv's survival curves need a Breslow baseline hazard. We fit it on the union of the
setting's training tables; the Breslow sums (events per time, sum of exp(risk) over the risk
set) are additive over nodes, so a federated sum gives exactly the same baseline.

CLI: ``python -m fl_engine.experiments.grid --cohort {generated,iwgpm,PATH} --use-case mds
--model {deepsurv,savae,cox} --out DIR [--seeds 5 | --seeds 3,5-9] [--resume]`` where PATH is
a table, an ETL output folder (`fedhaem-node etl`) or an IWG-PM folder. Each seed is written to
DIR/seeds/ as it finishes (fl_engine.experiments.store); --resume skips the seeds already there
and refuses a changed configuration or cohort. At the end: results.csv (one row per seed,
setting, case and evaluation set), summary.csv / summary.md (mean over seeds and mean bootstrap
interval), rounds.csv and plots (plotly HTML; PNG too when kaleido is installed).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedhaem_kernel.metrics import (antolini_c, bootstrap_ci, harrell_c, integrated_brier_score,
                                    kaplan_meier, step_at, uno_c)
from fedhaem_kernel.schema import get_schema
from etl.table import fingerprint, read_table_file
from fl_engine.cohort import generate_mds_cohort, split_nodes
from fl_engine.datasets.iwgpm import load_iwgpm
from fl_engine.experiments.store import config_record, open_store, parse_seeds, read_seed, write_seed
from fl_engine.features import Preprocessor
from fl_engine.scores.conventional import (COVERAGE_MIN, LABELS, conventional_groups, conventional_risks,
                                           group_layout)

NODE_SPLITS: dict[int, tuple[float, ...]] = {3: (0.6, 0.3, 0.1), 5: (0.45, 0.2, 0.15, 0.1, 0.1)}
# Worst case: feature groups each node lacks (node index -> groups), per federation size.
WORST_CASE_DROPS: dict[int, dict[int, tuple[str, ...]]] = {
    3: {1: ("genomic",), 2: ("cytogenetic",)},
    5: {1: ("genomic",), 3: ("cytogenetic",), 4: ("genomic",)},
}
WORST_CASE_EXTRA_MISSING = 0.15  # share of clinical cells blanked on every node
DEFAULT_GROUPS = ("clinical", "cytogenetic", "genomic")
# A conventional score computed on fewer test patients than this share is flagged, not compared
# (the same rule as the study's comparison phase).
SCORE_COVERAGE_MIN = COVERAGE_MIN
# Newton steps of the Cox baseline (it converges in well under ten on these cohorts).
COX_ROUNDS = 12


@dataclass
class FedResult:
    """What `_federate` returns: the final model, its Preprocessor and per-round records."""

    model: object
    preprocessor: Preprocessor
    rounds: list[dict] = field(default_factory=list)
    chosen_round: int = 0


@dataclass
class GridConfig:
    """Knobs of one grid run (times in months)."""

    use_case: str = "MDS"
    endpoint: str = "os"
    model: str = "deepsurv"
    model_params: dict = field(default_factory=dict)
    feature_groups: tuple[str, ...] = DEFAULT_GROUPS
    rounds: int = 20
    local_epochs: int = 1
    holdout_fraction: float = 0.15
    test_fraction: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    federations: tuple[int, ...] = (3, 5)
    cases: tuple[str, ...] = ("best", "worst")
    isolated: bool = True
    n_boot: int = 200
    scores: bool = True
    select_round: bool = True
    baselines: tuple[str, ...] = ("cox",)
    cox_params: dict = field(default_factory=lambda: {"penalizer": 0.01})
    cox_rounds: int = COX_ROUNDS


def _federate(node_tables: dict[str, pd.DataFrame], cfg: GridConfig, seed: int) -> FedResult:
    """Train over {node name: training table} with the in-process executor of the Flower apps;
    one table = a centralised (or isolated) run through the same code.

    With cfg.select_round, the number of rounds is a model-selection choice made on the nodes'
    hold-out splits (never the test set): run cfg.rounds rounds, take the round with the best
    global hold-out C (earliest on ties), and rerun up to it (runs are seeded, so the rerun is
    the prefix of the first one)."""
    from fl_engine.federation import parse_run_config, run_in_process  # torch: only when a grid cell trains

    def config(rounds: int):
        return parse_run_config({
            "use_case": cfg.use_case, "endpoint": cfg.endpoint, "model": cfg.model,
            "model_params": json.dumps(cfg.model_params),
            "feature_groups": ",".join(cfg.feature_groups), "num_rounds": rounds,
            "local_epochs": cfg.local_epochs, "min_nodes": 1,
            "holdout_fraction": cfg.holdout_fraction, "seed": seed,
        })

    run_cfg = config(cfg.rounds)
    if cfg.model == "savae" and "column_kinds" not in cfg.model_params:
        # SAVAE's likelihood heads follow the column kinds of the federation's Preprocessor,
        # which the nodes' statistics determine: build the same one here (aggregates only).
        from fl_engine.federation.core import build_preprocessor, node_stats  # torch: only when a grid trains
        from fl_engine.models.savae import column_kinds_from_preprocessor  # torch: only when a grid trains
        pre0 = build_preprocessor(run_cfg, [node_stats(node_tables[n], run_cfg) for n in sorted(node_tables)])
        cfg = replace(cfg, model_params={**cfg.model_params, **column_kinds_from_preprocessor(pre0)})
        run_cfg = config(cfg.rounds)
    hist = run_in_process(run_cfg, node_tables)
    chosen = cfg.rounds
    # Cox rounds are Newton steps towards the penalised optimum, not epochs to stop early
    if cfg.select_round and cfg.rounds > 1 and cfg.model != "cox":
        c = [next((m["value"] for m in r["metrics"] if m["node"] == "global" and m["name"] == "c_index"),
                  math.nan) for r in hist.rounds]
        c = np.nan_to_num(np.asarray(c, float), nan=-1.0)
        chosen = int(np.argmax(c)) + 1
        if chosen < cfg.rounds:
            run_cfg = config(chosen)
            rounds_all = hist.rounds
            hist = run_in_process(run_cfg, node_tables)
            hist.rounds = rounds_all  # keep the full curve for the plots
    model = hist.model(run_cfg)
    pre = Preprocessor.from_dict(hist.preprocessor)
    if hasattr(model, "fit_baseline"):
        pooled = pd.concat(list(node_tables.values()), ignore_index=True)
        d, e = _survival(pooled, cfg)
        model.fit_baseline(pre.transform(pooled), d, e)
    return FedResult(model, pre, hist.rounds, chosen)


# --- cohort preparation ---------------------------------------------------------------------

IWGPM_FILES = ("df_clinical.tsv", "df_mut.tsv", "df_cna.tsv", "maf.tsv")
ETL_TABLES = ("table.parquet", "table.csv")


def load_cohort(source: str, use_case: str = "MDS", n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """`generated` (MDS generator), `iwgpm` (../shared/data/mds_iwgpm) or a path: an ML-ready
    table (.csv, .tsv, .parquet), an ETL output folder (`fedhaem-node etl`: manifest.json and
    table.parquet or table.csv; its use case must be `use_case`) or an IWG-PM folder
    (df_clinical.tsv ...). A folder that is neither is refused naming what was expected."""
    if source == "generated":
        if use_case.upper() != "MDS":
            raise ValueError(f"the generated cohort is MDS only, not {use_case}")
        return generate_mds_cohort(n, seed)
    if source == "iwgpm":
        source = str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mds_iwgpm")
    p = Path(source)
    if p.is_dir():
        return _load_folder(p, use_case)
    if not p.is_file():
        raise FileNotFoundError(f"cohort {source!r}: no such file or folder")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")


def cohort_layout(folder: Path) -> str:
    """"etl" (manifest.json beside table.parquet / table.csv), "iwgpm" (df_clinical.tsv) or ""."""
    if (folder / "manifest.json").is_file() or any((folder / t).is_file() for t in ETL_TABLES):
        return "etl"
    if (folder / IWGPM_FILES[0]).is_file():
        return "iwgpm"
    return ""


def _load_folder(folder: Path, use_case: str) -> pd.DataFrame:
    layout = cohort_layout(folder)
    if layout == "iwgpm":
        if use_case.upper() != "MDS":
            raise ValueError(f"cohort folder {folder}: an IWG-PM (MDS) folder, but the grid's use case is "
                             f"{use_case.upper()}")
        return load_iwgpm(folder)
    if layout == "etl":
        return _load_etl_output(folder, use_case)
    seen = sorted(q.name for q in folder.iterdir())[:8]
    raise ValueError(f"cohort folder {folder}: neither an ETL output (manifest.json with "
                     f"{' or '.join(ETL_TABLES)}, as `fedhaem-node etl` writes) nor an IWG-PM folder "
                     f"({', '.join(IWGPM_FILES)}); it holds {', '.join(seen) if seen else 'nothing'}"
                     f"{' ...' if len(seen) == 8 else ''}")


def _load_etl_output(folder: Path, use_case: str) -> pd.DataFrame:
    """The ML-ready table of an ETL output folder (Parquet preferred: it keeps the fields
    declared never tested), after checking its manifest: same use case, times in months."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"ETL output folder {folder}: manifest.json not found (the ETL writes it last: "
                         "the run did not finish, or this is not an ETL output)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"ETL output folder {folder}: manifest.json cannot be read: {err}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"ETL output folder {folder}: manifest.json is not an object")
    uc = str(manifest.get("use_case", "")).upper()
    if uc != use_case.upper():
        raise ValueError(f"ETL output folder {folder}: its manifest says use case {uc or '(none)'}, the grid "
                         f"runs {use_case.upper()} (pass --use-case {uc.lower() or '...'})")
    unit = manifest.get("time_unit", "months")
    if unit != "months":
        raise ValueError(f"ETL output folder {folder}: times in {unit!r}, the grid needs months")
    table = next((folder / t for t in ETL_TABLES if (folder / t).is_file()), None)
    if table is None:
        raise ValueError(f"ETL output folder {folder}: manifest.json but no {' or '.join(ETL_TABLES)}")
    df = read_table_file(table)
    expected = manifest.get("patient_count")
    if isinstance(expected, int) and expected != len(df):
        raise ValueError(f"ETL output folder {folder}: {table.name} has {len(df)} rows, its manifest "
                         f"{expected} patients (a table from another run?)")
    return df


def _survival(df: pd.DataFrame, cfg: GridConfig) -> tuple[np.ndarray, np.ndarray]:
    ep = get_schema(cfg.use_case).endpoint(cfg.endpoint)
    return df[ep.time_column].to_numpy(float), df[ep.event_column].to_numpy(float)


def usable_rows(df: pd.DataFrame, cfg: GridConfig) -> pd.DataFrame:
    """Rows with a known endpoint (time >= 0, event 0/1)."""
    ep = get_schema(cfg.use_case).endpoint(cfg.endpoint)
    for col in (ep.time_column, ep.event_column):
        if col not in df:
            raise ValueError(f"cohort has no column {col!r} for endpoint {cfg.endpoint!r}")
    ok = df[ep.time_column].notna() & (df[ep.time_column] >= 0) & df[ep.event_column].isin([0, 1])
    return df[ok].reset_index(drop=True)


def degrade(tables: list[pd.DataFrame], drops: dict[int, tuple[str, ...]], use_case: str,
            extra_missing: float, seed: int) -> list[pd.DataFrame]:
    """Worst case: node i loses the columns of groups drops[i]; every node loses a share
    `extra_missing` of its clinical numeric cells at random."""
    schema = get_schema(use_case)
    rng = np.random.default_rng(seed + 7919)
    out = []
    for i, t in enumerate(tables):
        t = t.copy()
        for g in drops.get(i, ()):
            t = t.drop(columns=[c for c in schema.group(g) if c in t])
        for c in schema.group("clinical"):
            if c in t and schema.feature(c).kind == "numeric" and not schema.feature(c).required:
                t.loc[rng.random(len(t)) < extra_missing, c] = np.nan
        out.append(t)
    return out


# --- evaluation -----------------------------------------------------------------------------

def _scores(df: pd.DataFrame, use_case: str) -> dict[str, np.ndarray]:
    """Conventional risk scores per row (higher = worse; NaN where not computable) of the use
    case (fl_engine.scores.conventional: IPSS-M mean scenario and IPSS-R for MDS, ELN 2022 for
    AML, CPSS / CPSS-Mol for CMML, ISS / R-ISS for myeloma; a score whose inputs are absent, as
    in the worst case, is left out). For MDS, published columns (ipssm_score, ipssr_score, e.g.
    from the IWG-PM loader) are added as *_published, or stand in when the inputs are absent."""
    out = conventional_risks(df, use_case)
    if use_case.upper() == "MDS":
        for name, col in (("ipss_m", "ipssm_score"), ("ipss_r", "ipssr_score")):
            if col in df:
                v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
                out[f"{name}_published" if name in out else name] = v
    return out


def score_groups(df: pd.DataFrame, use_case: str) -> dict[str, np.ndarray]:
    """{score label (e.g. "IPSS-M"): category per row as a string, "" where undecided} for the
    use case's conventional scores whose inputs are in `df`, categories in increasing risk."""
    idx = conventional_groups(df, use_case)
    out = {}
    for name, cats in group_layout(use_case):
        if name in idx:
            out[LABELS[name]] = np.array([cats[i] if i >= 0 else "" for i in idx[name]], dtype=object)
    return out


def brier_times(durations, events) -> np.ndarray:
    """Times at which the integrated Brier score of a test set is taken: its distinct event
    times up to the 90th percentile of them (the same for every model scored on that set)."""
    d, e = np.asarray(durations, float), np.asarray(events, float)
    if not (e > 0).any():
        return np.array([])
    ev = d[e > 0]
    return np.unique(ev[ev <= np.quantile(ev, 0.9)])


def evaluate(durations, events, risk, surv=None, grid=None, train=None, n_boot: int = 0,
             seed: int = 0) -> dict:
    """Harrell / Antolini / Uno C (+ Harrell bootstrap interval when n_boot > 0) on rows with a
    finite risk; durations in months. With survival curves (`surv` on `grid`) and the training
    rows (`train` = (durations, events)): the integrated Brier score as `ibs` (Graf, IPCW with
    the test rows' censoring distribution, over `brier_times` of the test rows, so every model
    scored on one test set is integrated alike), and as `ibs_km` the same score of the training
    rows' Kaplan-Meier curve, the no-covariate reference (lower is better; a model that does not
    beat `ibs_km` adds nothing to calibration)."""
    d, e, r = (np.asarray(a, float) for a in (durations, events, risk))
    ok = np.isfinite(r)
    res = {"n": int(ok.sum()), "n_events": int(e[ok].sum())}
    if ok.sum() < 2 or e[ok].sum() < 1:
        return {**res, "harrell_c": math.nan}
    res["harrell_c"] = harrell_c(d[ok], e[ok], r[ok])
    if n_boot > 0:
        ci = bootstrap_ci(harrell_c, d[ok], e[ok], r[ok], n_boot=n_boot, seed=seed)
        res["harrell_lo"], res["harrell_hi"] = ci.lower, ci.upper
    if surv is not None:
        res["antolini_c"] = antolini_c(d[ok], e[ok], surv[ok].T, grid)
    if train is not None:
        td, te = train
        ts = brier_times(d[ok], e[ok]) if surv is not None else np.array([])
        if ts.size >= 2:
            km_t, km_s = kaplan_meier(td, te)
            km = np.repeat(step_at(km_t, km_s, ts)[:, None], int(ok.sum()), axis=1)
            res["ibs"] = integrated_brier_score(d[ok], e[ok], surv[ok].T, grid, ts)
            res["ibs_km"] = integrated_brier_score(d[ok], e[ok], km, ts, ts)
        tau = float(np.quantile(td[te > 0], 0.9)) if (te > 0).any() else None
        try:
            res["uno_c"] = uno_c(d[ok], e[ok], r[ok], tau=tau, train_durations=td, train_events=te)
        except ValueError:
            res["uno_c"] = math.nan
    return res


def _eval_model(fr: FedResult, tests: dict[str, pd.DataFrame], train: pd.DataFrame,
                cfg: GridConfig, n_boot: int, seed: int) -> dict[str, dict]:
    td, te = _survival(train, cfg)
    grid = np.unique(td[te > 0])
    out = {}
    for name, test in tests.items():
        x = fr.preprocessor.transform(test)
        d, e = _survival(test, cfg)
        risk = fr.model.predict_risk(x)
        try:
            surv = fr.model.predict_survival(x, grid)
        except RuntimeError:
            surv = None
        out[name] = evaluate(d, e, risk, surv, grid, (td, te), n_boot if name == "global" else 0, seed)
        out[name]["risk"] = risk
    return out


# --- the grid -------------------------------------------------------------------------------

def run_grid(df: pd.DataFrame, cfg: GridConfig, log=print, on_seed=None,
             skip_seeds=()) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """All settings over cfg.seeds (but `skip_seeds`, e.g. seeds already written). Returns
    (results: one row per seed/setting/case/eval set, rounds: per-round C on node hold-outs,
    extras of the first seed for plots). `on_seed(seed, rows, round_rows, extras)` is called as
    each seed finishes (the command line writes it then)."""
    df = usable_rows(df, cfg)
    rows, round_rows = [], []
    extras: dict = {"km": None}
    for seed in cfg.seeds:
        if seed in skip_seeds:
            continue
        r, rr, ex = run_seed(df, cfg, seed, log)
        rows += r
        round_rows += rr
        if seed == cfg.seeds[0]:
            extras = ex
        if on_seed is not None:
            on_seed(seed, r, rr, ex)
    return pd.DataFrame(rows), pd.DataFrame(round_rows), extras


def _cox_config(cfg: GridConfig) -> GridConfig:
    """The Cox baseline's settings: exact Newton steps (cfg.cox_rounds), no round selection."""
    return replace(cfg, model="cox", model_params=dict(cfg.cox_params), rounds=cfg.cox_rounds,
                   local_epochs=1, select_round=False)


def run_seed(df: pd.DataFrame, cfg: GridConfig, seed: int, log=print) -> tuple[list[dict], list[dict], dict]:
    """Every setting of one seed on usable rows `df`: (result rows, round rows, extras)."""
    rows, round_rows = [], []
    extras: dict = {"km": None}
    cox = "cox" in cfg.baselines and cfg.model != "cox"
    strat = get_schema(cfg.use_case).endpoint(cfg.endpoint).event_column
    train, test = split_nodes(df, (1 - cfg.test_fraction, cfg.test_fraction), seed=seed, stratify=strat)
    t0 = time.time()
    # Centralised: one node with every training row.
    fr = _federate({"central": train}, cfg, seed)
    res = _eval_model(fr, {"global": test}, train, cfg, cfg.n_boot, seed)
    rows.append(_row(seed, "centralised", "best", "global", res["global"], rounds=fr.chosen_round))
    msg = f"seed {seed}: centralised C {res['global']['harrell_c']:.3f}"
    extras["km"] = {"test": test, "risk": res["global"]["risk"]}
    if cox:
        fc = _federate({"central": train}, _cox_config(cfg), seed)
        rc = _eval_model(fc, {"global": test}, train, cfg, cfg.n_boot, seed)
        rows.append(_row(seed, "cox_centralised", "best", "global", rc["global"], rounds=fc.chosen_round))
        msg += f", Cox {rc['global']['harrell_c']:.3f}"
    sc = _scores(test, cfg.use_case) if cfg.scores else {}
    score_rows = _score_rows(seed, "", "best", {"global": test}, sc, cfg, cfg.n_boot)
    rows += score_rows
    extras["scores"] = sc
    extras["groups"] = score_groups(test, cfg.use_case) if cfg.scores else {}
    log(" ".join([msg] + [_score_text(r) for r in score_rows]) + f" ({time.time() - t0:.0f} s)")
    for k in cfg.federations:
        fracs = NODE_SPLITS[k]
        tr_nodes = split_nodes(train, fracs, seed=seed + 1000 * k, stratify=strat)
        te_nodes = split_nodes(test, fracs, seed=seed + 1000 * k, stratify=strat)
        names = [f"node{i + 1}" for i in range(k)]
        for case in cfg.cases:
            if case == "worst":
                trn = degrade(tr_nodes, WORST_CASE_DROPS[k], cfg.use_case, WORST_CASE_EXTRA_MISSING, seed)
                ten = degrade(te_nodes, WORST_CASE_DROPS[k], cfg.use_case, WORST_CASE_EXTRA_MISSING, seed + 1)
            else:
                trn, ten = tr_nodes, te_nodes
            tests = {"global": pd.concat(ten, ignore_index=True), **dict(zip(names, ten))}
            t0 = time.time()
            pooled_train = pd.concat(trn, ignore_index=True)
            fr = _federate(dict(zip(names, trn)), cfg, seed)
            res = _eval_model(fr, tests, pooled_train, cfg, cfg.n_boot, seed)
            for ev, r in res.items():
                rows.append(_row(seed, f"federated_{k}", case, ev, r, rounds=fr.chosen_round))
            round_rows += _rounds(fr.rounds, seed, f"federated_{k}", case)
            msg = f"seed {seed}: federated_{k} {case} C {res['global']['harrell_c']:.3f}"
            if cox:
                fc = _federate(dict(zip(names, trn)), _cox_config(cfg), seed)
                rc = _eval_model(fc, tests, pooled_train, cfg, cfg.n_boot, seed)
                for ev, r in rc.items():
                    rows.append(_row(seed, f"cox_federated_{k}", case, ev, r, rounds=fc.chosen_round))
                round_rows += _rounds(fc.rounds, seed, f"cox_federated_{k}", case)
                msg += f", Cox {rc['global']['harrell_c']:.3f}"
            if cfg.scores:
                # each simulated hospital's test patients: the conventional score beside the model's
                # C on the same rows (and, in the worst case, on the degraded global test set)
                per_node = {ev: t for ev, t in tests.items() if ev != "global" or case == "worst"}
                sc_rows = _score_rows(seed, f"_{k}", case, per_node,
                                      {ev: _scores(t, cfg.use_case) for ev, t in per_node.items()}, cfg, 0,
                                      expected=tuple(sc))
                rows += sc_rows
                low = [r for r in sc_rows if not r["coverage_ok"]]
                if low:
                    msg += " | " + "; ".join(_score_text(r, with_node=True) for r in low)
            if cfg.isolated:
                iso = []
                for name, tr_i in zip(names, trn):
                    fi = _federate({name: tr_i}, cfg, seed)
                    ri = _eval_model(fi, {"global": tests["global"], name: tests[name]}, tr_i, cfg, 0, seed)
                    rows.append(_row(seed, f"isolated_{k}", case, name, ri[name], node=name, rounds=fi.chosen_round))
                    rows.append(_row(seed, f"isolated_{k}", case, "global", ri["global"], node=name,
                                     rounds=fi.chosen_round))
                    round_rows += _rounds(fi.rounds, seed, f"isolated_{k}", case)
                    iso.append(ri[name]["harrell_c"])
                msg += " | isolated " + " ".join(f"{c:.3f}" for c in iso)
            log(msg + f" ({time.time() - t0:.0f} s)")
    return rows, round_rows, extras


def _score_rows(seed: int, suffix: str, case: str, tests: dict[str, pd.DataFrame], scores: dict,
                cfg: GridConfig, n_boot: int, expected=()) -> list[dict]:
    """One row per (evaluation set, conventional score): Harrell's C on the patients it is
    computable on, with its coverage (n of n_total test patients, NaN risk = not computable);
    under SCORE_COVERAGE_MIN the row is flagged (coverage_ok False, and a note) and must not be
    compared with the models, which are scored on every test patient. `scores` is
    {score: risk} for a single set or {eval set: {score: risk}}; setting = score name + suffix.
    A score in `expected` that a set cannot compute at all (its inputs are absent there, as on
    a hospital of the worst case) gets a row with n = 0: not computable is said, not omitted."""
    out = []
    for ev, test in tests.items():
        sc = scores.get(ev, scores) if all(isinstance(v, dict) for v in scores.values()) else scores
        sc = {**{name: np.full(len(test), np.nan) for name in expected}, **sc}
        d, e = _survival(test, cfg)
        for name, risk in sc.items():
            r = evaluate(d, e, risk, n_boot=n_boot, seed=seed)
            n_total = int(len(risk))
            cov = r["n"] / n_total if n_total else 0.0
            r.update(score=name, n_total=n_total, coverage=cov, coverage_ok=bool(cov >= SCORE_COVERAGE_MIN))
            if not r["coverage_ok"]:
                r["note"] = (f"computed on {r['n']} of {n_total} test patients ({cov:.0%}), under "
                             f"{SCORE_COVERAGE_MIN:.0%}: not comparable with the models' C")
            out.append(_row(seed, f"{name}{suffix}", case, ev, r))
    return out


def _score_text(r: dict, with_node: bool = False) -> str:
    """'IPSS-M 0.748 (n 250/254)', flagged when the coverage is too low to compare."""
    base = r["score"].removesuffix("_published")
    label = LABELS.get(base, base) + (" (published)" if r["score"].endswith("_published") else "")
    where = f" on {r['eval']}" if with_node else ""
    flag = "" if r["coverage_ok"] else ", LOW COVERAGE: not comparable"
    return f"{label}{where} {r.get('harrell_c', math.nan):.3f} (n {r['n']}/{r['n_total']}{flag})"


def _row(seed, setting, case, ev, r, node="", rounds=None) -> dict:
    return {"seed": seed, "setting": setting, "case": case, "eval": ev, "trained_on": node or setting,
            "rounds_used": rounds,
            **{k: v for k, v in r.items() if k != "risk"}}


def _rounds(records: list[dict], seed: int, setting: str, case: str) -> list[dict]:
    out = []
    for rec in records:
        for m in rec["metrics"]:
            if m["name"] == "c_index":
                out.append({"seed": seed, "setting": setting, "case": case, "round": rec["round"],
                            "node": m["node"], "c_index": m["value"]})
    return out


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (setting, case, eval set, trained_on) and the mean bootstrap interval;
    for conventional scores the mean coverage and `coverage_ok` (every seed's coverage at least
    SCORE_COVERAGE_MIN; NaN for models, which score every test patient)."""
    metrics = [c for c in ("harrell_c", "harrell_lo", "harrell_hi", "antolini_c", "uno_c", "ibs", "ibs_km", "n",
                           "n_total", "coverage", "rounds_used")
               if c in results]
    g = results.groupby(["setting", "case", "eval", "trained_on"], sort=False)
    out = g[metrics].mean()
    out["harrell_sd"] = g["harrell_c"].std()
    out["seeds"] = g["harrell_c"].count()
    if "coverage" in results:
        low = g["coverage"].min()
        out["coverage_min"] = low
        out["coverage_ok"] = np.where(low.isna(), np.nan, low >= SCORE_COVERAGE_MIN)
    return out.reset_index()


def to_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table; a score under SCORE_COVERAGE_MIN says it is not comparable."""
    cols = ["setting", "case", "eval", "trained_on", "seeds", "n", "rounds_used", "harrell_c",
            "harrell_lo", "harrell_hi", "harrell_sd", "antolini_c", "uno_c", "ibs", "ibs_km", "coverage"]
    cols = [c for c in cols if c in summary]
    flagged = "coverage_ok" in summary
    lines = ["| " + " | ".join(cols + (["note"] if flagged else [])) + " |",
             "|" + "---|" * (len(cols) + flagged)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == "coverage":
                cells.append("" if pd.isna(v) else f"{v:.0%}")
                continue
            cells.append(f"{v:.3f}" if isinstance(v, float) and c != "n" else
                         (f"{v:.0f}" if isinstance(v, float) else str(v)))
        if flagged:
            ok = r["coverage_ok"]
            cells.append("" if pd.isna(ok) or ok else
                         f"LOW COVERAGE (lowest {r['coverage_min']:.0%} of the test patients, under "
                         f"{SCORE_COVERAGE_MIN:.0%}): not comparable")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- Kaplan-Meier by group ------------------------------------------------------------------

RISK_TERTILES = ("Low predicted risk", "Intermediate predicted risk", "High predicted risk")
KM_MIN_GROUP = 5  # patients; smaller groups give a curve nobody should read


def risk_tertiles(risk) -> np.ndarray:
    """RISK_TERTILES label per row by rank of `risk` (None where not finite); by rank, not by
    value quantiles, so that tied risks cannot make the tertile edges collide."""
    risk = np.asarray(risk, float)
    out = np.full(risk.shape, None, dtype=object)
    ok = np.flatnonzero(np.isfinite(risk))
    order = ok[np.argsort(risk[ok], kind="stable")]
    for rank, i in enumerate(order):
        out[i] = RISK_TERTILES[min(2, 3 * rank // ok.size)]
    return out


def km_panels(extras: dict, cfg: GridConfig, min_group: int = KM_MIN_GROUP) -> dict:
    """Kaplan-Meier curves (months) on the first seed's global test set, one panel per grouping:
    the centralised model's risk tertiles and the categories of the use case's conventional
    scores (score_groups), in increasing risk; groups under `min_group` patients are left out.
    {"seed", "unit", "panels": [{"title", "groups": [{"label", "n", "events", "times",
    "survival"}]}]}: arrays, no patient rows."""
    km = (extras or {}).get("km")
    if not km:
        return {"seed": None, "unit": "months", "panels": []}
    d, e = _survival(km["test"], cfg)
    groupings = [("Model (centralised): predicted risk tertiles", risk_tertiles(km["risk"]), RISK_TERTILES)]
    order_of = {LABELS[name]: cats for name, cats in group_layout(cfg.use_case)}
    for label, cats in (extras.get("groups") or {}).items():
        groupings.append((label, cats, order_of.get(label, ())))
    panels = []
    for title, groups, order in groupings:
        g = np.asarray(groups, dtype=object)
        curves = []
        for label in order:
            m = np.array([x == label for x in g]) & np.isfinite(d) & np.isfinite(e)
            if m.sum() < min_group:
                continue
            t, sv = kaplan_meier(d[m], e[m])
            curves.append({"label": label, "n": int(m.sum()), "events": int(e[m].sum()),
                           "times": [round(float(x), 3) for x in t], "survival": [round(float(x), 4) for x in sv]})
        panels.append({"title": title, "groups": curves})
    return {"seed": int(cfg.seeds[0]), "unit": "months", "panels": panels}


# --- plots ----------------------------------------------------------------------------------

def write_plots(out: Path, summary: pd.DataFrame, rounds: pd.DataFrame, extras: dict | None,
                cfg: GridConfig, panels: list | None = None) -> list[Path]:
    """Plotly figures as standalone HTML (PNG too when kaleido is importable); the Kaplan-Meier
    panels from `extras` (km_panels) or given as `panels` (a resumed grid reads them back)."""
    # plotly loads only to draw (it comes with fedhaem[manager])
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figs: dict[str, go.Figure] = {}
    if len(rounds):
        fed_k = rounds.setting.str.extract(r"_(\d+)$")[0].astype(int).max()
        r = rounds[(rounds.case == "best") & rounds.setting.str.endswith(f"_{fed_k}")]
        fig = go.Figure()
        for (setting, node), grp in r.groupby(["setting", "node"]):
            if node == "global":
                continue
            m = grp.groupby("round").c_index.mean()
            fig.add_trace(go.Scatter(x=m.index, y=m.values, mode="lines+markers",
                                     name=f"{node} {setting.split('_')[0]}",
                                     line={"dash": "solid" if setting.startswith("federated") else "dot"}))
        fig.update_layout(title=f"Harrell C per round on each node's hold-out ({fed_k} nodes, best case, mean over seeds)",
                          xaxis_title="round", yaxis_title="Harrell C")
        figs["c_per_round"] = fig
    s = summary[summary["eval"] == "global"]
    s = s[~s.setting.str.startswith("isolated")]
    fig = go.Figure()
    for case in s.case.unique():
        sc = s[s.case == case]
        fig.add_trace(go.Bar(x=sc.setting, y=sc.harrell_c, name=case,
                             error_y={"type": "data", "symmetric": False,
                                      "array": (sc.get("harrell_hi", sc.harrell_c) - sc.harrell_c).fillna(0),
                                      "arrayminus": (sc.harrell_c - sc.get("harrell_lo", sc.harrell_c)).fillna(0)}))
    fig.update_layout(title="Global test set: Harrell C (mean over seeds, mean bootstrap 95% interval)",
                      yaxis_range=[0.5, 0.85], barmode="group")
    figs["centralised_vs_federated"] = fig
    if panels is None:
        panels = km_panels(extras, cfg)["panels"]
    if panels:
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p["title"] for p in panels], shared_yaxes=True)
        for j, p in enumerate(panels, start=1):
            for g in p["groups"]:
                fig.add_trace(go.Scatter(x=g["times"], y=g["survival"], mode="lines", line_shape="hv",
                                         name=f"{p['title']}: {g['label']} (n={g['n']})"), row=1, col=j)
        fig.update_layout(title=f"Kaplan-Meier on the test set of seed {cfg.seeds[0]} (months)")
        figs["km_by_risk_group"] = fig
    written = []
    try:
        import kaleido  # noqa: F401
        png = True
    except ImportError:
        png = False
    for name, fig in figs.items():
        p = out / f"{name}.html"
        fig.write_html(p, include_plotlyjs=True, full_html=True)
        written.append(p)
        if png:
            try:
                fig.write_image(out / f"{name}.png")
                written.append(out / f"{name}.png")
            except Exception:
                pass
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fl_engine.experiments.grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", default="generated",
                    help="generated | iwgpm | PATH (a table, an ETL output folder or an IWG-PM folder)")
    ap.add_argument("--use-case", default="mds")
    ap.add_argument("--endpoint", default="os")
    ap.add_argument("--model", default="deepsurv", choices=("deepsurv", "savae", "cox"))
    ap.add_argument("--model-params", default="{}", help="JSON object of model parameters")
    ap.add_argument("--baselines", default="cox",
                    help="models trained beside --model on the same splits: cox, or none")
    ap.add_argument("--cox-penalizer", type=float, default=0.01,
                    help="L2 penalty per patient of the Cox baseline (lifelines' penalizer)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="5",
                    help="N (the seeds 0 to N-1) or seeds and ranges, e.g. 3,5-9 (one seed: 7,)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the grid in --out: seeds already written there are skipped; refused "
                         "when its settings or cohort differ")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--n", type=int, default=4000, help="patients of the generated cohort")
    ap.add_argument("--cases", default="best,worst")
    ap.add_argument("--federations", default="3,5")
    ap.add_argument("--no-isolated", action="store_true")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--fixed-rounds", action="store_true",
                    help="use exactly --rounds rounds (default: best round on the nodes' hold-outs)")
    a = ap.parse_args(argv)
    try:
        seeds = parse_seeds(a.seeds)
    except ValueError as err:
        ap.error(str(err))
    try:
        params = json.loads(a.model_params)
    except json.JSONDecodeError as err:
        ap.error(f"--model-params is not valid JSON: {err}")
    if not isinstance(params, dict):
        ap.error("--model-params must be a JSON object")
    baselines = () if a.baselines.strip().lower() in ("", "none") else tuple(b.strip() for b in a.baselines.split(","))
    if set(baselines) - {"cox"}:
        ap.error(f"--baselines: {', '.join(sorted(set(baselines) - {'cox'}))} unknown (known: cox, none)")
    if a.model == "savae":
        params.setdefault("time_scale", 24.0)
    cfg = GridConfig(use_case=a.use_case.upper(), endpoint=a.endpoint, model=a.model,
                     model_params=params, rounds=a.rounds, local_epochs=a.local_epochs,
                     seeds=seeds, cases=tuple(a.cases.split(",")),
                     federations=tuple(int(k) for k in a.federations.split(",")),
                     isolated=not a.no_isolated, n_boot=a.n_boot, select_round=not a.fixed_rounds,
                     baselines=baselines, cox_params={"penalizer": a.cox_penalizer})
    for k in cfg.federations:
        if k not in NODE_SPLITS:
            ap.error(f"--federations: {k} nodes not supported (known: {sorted(NODE_SPLITS)})")
    out = Path(a.out)
    try:
        df = load_cohort(a.cohort, cfg.use_case, n=a.n)
        cohort = {"source": str(Path(a.cohort).resolve()) if a.cohort not in ("generated", "iwgpm") else a.cohort,
                  "rows": int(len(df)), "fingerprint": fingerprint(df),
                  **({"n": a.n} if a.cohort == "generated" else {})}
        done = open_store(out, config_record(cfg, cohort), a.resume)
    except (ValueError, FileNotFoundError) as err:
        print(f"grid: {err}", file=sys.stderr)
        return 2
    skip = [s for s in cfg.seeds if s in done]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if skip:
        log(f"resuming: seed(s) {', '.join(map(str, skip))} already written in {out}, skipped")

    def on_seed(seed, rows, round_rows, extras):
        path = write_seed(out, seed, {"results": rows, "rounds": round_rows,
                                      "km": km_panels(extras, cfg) if seed == cfg.seeds[0] else None})
        log(f"seed {seed} written to {path}")

    run_grid(df, cfg, log=log, on_seed=on_seed, skip_seeds=skip)
    payloads = [read_seed(out, s) for s in cfg.seeds]
    results = pd.DataFrame([r for p in payloads for r in p["results"]])
    rounds = pd.DataFrame([r for p in payloads for r in p["rounds"]])
    summary = summarise(results)
    results.to_csv(out / "results.csv", index=False)
    rounds.to_csv(out / "rounds.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(to_markdown(summary))
    write_plots(out, summary, rounds, None, cfg, panels=(payloads[0].get("km") or {}).get("panels", []))
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
