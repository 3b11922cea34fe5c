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
- Conventional scores (IPSS-M, IPSS-R for MDS) from `fl_engine.scores`, on the same test rows.
- Metrics on the global test set and on each node's test set: Harrell's C (+ Antolini's
  time-dependent C and Uno's C), percentile bootstrap 95% intervals on the global test set.

DeepSurv's survival curves need a Breslow baseline hazard. We fit it on the union of the
setting's training tables; the Breslow sums (events per time, sum of exp(risk) over the risk
set) are additive over nodes, so a federated sum gives exactly the same baseline.

CLI: ``python -m fl_engine.experiments.grid --cohort {generated,iwgpm,PATH} --use-case mds
--model deepsurv --out DIR [--seeds 5]`` writes results.csv (one row per seed, setting, case
and evaluation set), summary.csv / summary.md (mean over seeds and mean bootstrap interval),
rounds.csv and plots (plotly HTML; PNG too when kaleido is installed).
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
from fl_engine.cohort import generate_mds_cohort, split_nodes
from fl_engine.datasets.iwgpm import load_iwgpm
from fl_engine.features import Preprocessor
from fl_engine.scores.conventional import LABELS, conventional_groups, conventional_risks, group_layout

NODE_SPLITS: dict[int, tuple[float, ...]] = {3: (0.6, 0.3, 0.1), 5: (0.45, 0.2, 0.15, 0.1, 0.1)}
# Worst case: feature groups each node lacks (node index -> groups), per federation size.
WORST_CASE_DROPS: dict[int, dict[int, tuple[str, ...]]] = {
    3: {1: ("genomic",), 2: ("cytogenetic",)},
    5: {1: ("genomic",), 3: ("cytogenetic",), 4: ("genomic",)},
}
WORST_CASE_EXTRA_MISSING = 0.15  # share of clinical cells blanked on every node
DEFAULT_GROUPS = ("clinical", "cytogenetic", "genomic")


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
    if cfg.select_round and cfg.rounds > 1:
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

def load_cohort(source: str, use_case: str = "MDS", n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """`generated` (MDS generator), `iwgpm` (../shared/data/mds_iwgpm) or a path to an ML-ready
    table (.csv, .tsv, .parquet) or an IWG-PM folder."""
    if source == "generated":
        if use_case.upper() != "MDS":
            raise ValueError(f"the generated cohort is MDS only, not {use_case}")
        return generate_mds_cohort(n, seed)
    if source == "iwgpm":
        source = str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mds_iwgpm")
    p = Path(source)
    if p.is_dir():
        return load_iwgpm(p)
    if not p.is_file():
        raise FileNotFoundError(f"cohort {source!r}: no such file or folder")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")


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

def run_grid(df: pd.DataFrame, cfg: GridConfig, log=print) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """All settings over cfg.seeds. Returns (results: one row per seed/setting/case/eval set,
    rounds: per-round C on node hold-outs, extras for plots)."""
    df = usable_rows(df, cfg)
    rows, round_rows = [], []
    extras: dict = {"km": None}
    for seed in cfg.seeds:
        train, test = split_nodes(df, (1 - cfg.test_fraction, cfg.test_fraction), seed=seed,
                                  stratify=get_schema(cfg.use_case).endpoint(cfg.endpoint).event_column)
        t0 = time.time()
        # Centralised: one node with every training row.
        fr = _federate({"central": train}, cfg, seed)
        res = _eval_model(fr, {"global": test}, train, cfg, cfg.n_boot, seed)
        rows.append(_row(seed, "centralised", "best", "global", res["global"], rounds=fr.chosen_round))
        if seed == cfg.seeds[0]:
            extras["km"] = {"test": test, "risk": res["global"]["risk"]}
        sc = _scores(test, cfg.use_case) if cfg.scores else {}
        d, e = _survival(test, cfg)
        for name, s in sc.items():
            rows.append(_row(seed, name, "best", "global",
                             evaluate(d, e, s, n_boot=cfg.n_boot, seed=seed)))
        if seed == cfg.seeds[0]:
            extras["scores"] = sc
            extras["groups"] = score_groups(test, cfg.use_case) if cfg.scores else {}
        log(f"seed {seed}: centralised C {res['global']['harrell_c']:.3f} "
            + " ".join(f"{k} {rows[-len(sc) + i]['harrell_c']:.3f}" for i, k in enumerate(sc))
            + f" ({time.time() - t0:.0f} s)")
        for k in cfg.federations:
            fracs = NODE_SPLITS[k]
            strat = get_schema(cfg.use_case).endpoint(cfg.endpoint).event_column
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
                fr = _federate(dict(zip(names, trn)), cfg, seed)
                res = _eval_model(fr, tests, pd.concat(trn, ignore_index=True), cfg, cfg.n_boot, seed)
                for ev, r in res.items():
                    rows.append(_row(seed, f"federated_{k}", case, ev, r, rounds=fr.chosen_round))
                round_rows += _rounds(fr.rounds, seed, f"federated_{k}", case)
                msg = f"seed {seed}: federated_{k} {case} C {res['global']['harrell_c']:.3f}"
                if case == "worst" and cfg.scores:
                    sc_w = _scores(tests["global"], cfg.use_case)
                    dg, eg = _survival(tests["global"], cfg)
                    for name, s in sc_w.items():
                        rows.append(_row(seed, f"{name}_{k}", case, "global", evaluate(dg, eg, s)))
                if cfg.isolated:
                    for name, tr_i in zip(names, trn):
                        fi = _federate({name: tr_i}, cfg, seed)
                        ri = _eval_model(fi, {"global": tests["global"], name: tests[name]}, tr_i,
                                         cfg, 0, seed)
                        rows.append(_row(seed, f"isolated_{k}", case, name, ri[name], node=name, rounds=fi.chosen_round))
                        rows.append(_row(seed, f"isolated_{k}", case, "global", ri["global"], node=name, rounds=fi.chosen_round))
                        round_rows += _rounds(fi.rounds, seed, f"isolated_{k}", case)
                    iso = [r["harrell_c"] for r in rows[-2 * k:] if r["eval"] != "global"]
                    msg += " | isolated " + " ".join(f"{c:.3f}" for c in iso)
                log(msg + f" ({time.time() - t0:.0f} s)")
    return pd.DataFrame(rows), pd.DataFrame(round_rows), extras


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
    """Mean over seeds per (setting, case, eval set, trained_on) and the mean bootstrap interval."""
    metrics = [c for c in ("harrell_c", "harrell_lo", "harrell_hi", "antolini_c", "uno_c", "ibs", "ibs_km", "n",
                           "rounds_used")
               if c in results]
    g = results.groupby(["setting", "case", "eval", "trained_on"], sort=False)
    out = g[metrics].mean()
    out["harrell_sd"] = g["harrell_c"].std()
    out["seeds"] = g["harrell_c"].count()
    return out.reset_index()


def to_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    cols = ["setting", "case", "eval", "trained_on", "seeds", "n", "rounds_used", "harrell_c",
            "harrell_lo", "harrell_hi", "harrell_sd", "antolini_c", "uno_c", "ibs", "ibs_km"]
    cols = [c for c in cols if c in summary]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.3f}" if isinstance(v, float) and c != "n" else
                         (f"{v:.0f}" if isinstance(v, float) else str(v)))
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

def write_plots(out: Path, summary: pd.DataFrame, rounds: pd.DataFrame, extras: dict,
                cfg: GridConfig) -> list[Path]:
    """Plotly figures as standalone HTML (PNG too when kaleido is importable)."""
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
    ap.add_argument("--cohort", default="generated", help="generated | iwgpm | PATH")
    ap.add_argument("--use-case", default="mds")
    ap.add_argument("--endpoint", default="os")
    ap.add_argument("--model", default="deepsurv", choices=("deepsurv", "savae"))
    ap.add_argument("--model-params", default="{}", help="JSON object of model parameters")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=5)
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
    params = json.loads(a.model_params)
    if a.model == "savae":
        params.setdefault("time_scale", 24.0)
    cfg = GridConfig(use_case=a.use_case.upper(), endpoint=a.endpoint, model=a.model,
                     model_params=params, rounds=a.rounds, local_epochs=a.local_epochs,
                     seeds=tuple(range(a.seeds)), cases=tuple(a.cases.split(",")),
                     federations=tuple(int(k) for k in a.federations.split(",")),
                     isolated=not a.no_isolated, n_boot=a.n_boot, select_round=not a.fixed_rounds)
    for k in cfg.federations:
        if k not in NODE_SPLITS:
            ap.error(f"--federations: {k} nodes not supported (known: {sorted(NODE_SPLITS)})")
    df = load_cohort(a.cohort, cfg.use_case, n=a.n)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results, rounds, extras = run_grid(df, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    summary = summarise(results)
    results.to_csv(out / "results.csv", index=False)
    rounds.to_csv(out / "rounds.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(to_markdown(summary))
    write_plots(out, summary, rounds, extras, cfg)
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
