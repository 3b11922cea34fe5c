"""IWG-PM MDS cohort: centralised vs federated (3 and 5 nodes) vs isolated DeepSurv against
IPSS-M and IPSS-R, Harrell's C on the same held-out test sets over several seeds.

    python bench/survival_mds.py [--json] [--seeds 10] [--rounds 30] [--fixed-rounds] [--worst-case] [--model deepsurv]

Cohort: patients of ../shared/data/mds_iwgpm with overall survival and both published scores
(IPSS-R and IPSS-M; the README's n = 2,556 convention), clinical + cytogenetic + genomic
features of the MDS schema (therapy excluded). Each seed: a stratified 90/10 train/test split;
training and test rows are split over the nodes (60/30/10 or 45/20/15/10/10); every setting runs
through fl_engine.experiments.grid._federate, i.e. the in-process executor of the Flower apps
(centralised and isolated = one-node federations; each node keeps 15% of its training rows as
its per-round hold-out). DeepSurv: fl_engine.models.build_model("deepsurv"), one local epoch
per round; the number of rounds (at most --rounds) is picked per run as the round with the best
C on the nodes' hold-outs (never the test rows). IPSS-M / IPSS-R from fl_engine.scores on the same test rows (IPSS-M mean scenario
for missing terms); the published IWG-PM scores are reported as *_published.

Output (--json): harrell_c.{centralised, federated_3, federated_5, ipss_m, ipss_r, ...} each
{"mean", "ci95" (t interval over seeds), "boot95" (mean of per-seed bootstrap intervals),
"seeds"}; harrell_c.isolated / harrell_c.federated: {node: ...} on each node's own test rows
(3-node federation); isolated_on_global: {node: ...} the isolated models on the global test
set; integrated_brier.{centralised, federated_3, federated_5}: the models' integrated Brier
score on the global test set next to the training rows' Kaplan-Meier curve (calibration;
lower is better); paired differences over seeds with t intervals; and the targets met or not.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats as st  # noqa: E402

from fl_engine.experiments.grid import (GridConfig, load_cohort, run_grid, summarise,  # noqa: E402
                                        to_markdown, write_plots)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mds_iwgpm"


def _ci(values) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "seeds": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci95": [math.nan, math.nan], "seeds": 1}
    h = st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": round(float(v.mean()), 4), "ci95": [round(float(v.mean() - h), 4), round(float(v.mean() + h), 4)],
            "seeds": int(len(v)), "per_seed": [round(float(x), 4) for x in v]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=30, help="most rounds (best round picked on hold-outs)")
    ap.add_argument("--fixed-rounds", action="store_true", help="exactly --rounds rounds")
    ap.add_argument("--model", default="deepsurv", choices=("deepsurv", "savae"))
    ap.add_argument("--model-params", default=None, help="JSON object (default: see README)")
    ap.add_argument("--worst-case", action="store_true", help="also run the worst case")
    ap.add_argument("--all-patients", action="store_true", help="keep patients without published scores")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--out", default=None, help="folder for results.csv, summary.md and plots")
    a = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"IWG-PM cohort not found at {DATA}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    df = load_cohort(str(DATA))
    if not a.all_patients:
        df = df[df.ipssm_score.notna() & df.ipssr_score.notna()]
    df = df[df.os_months.notna() & df.os_event.notna()].reset_index(drop=True)
    if a.model_params:
        params = json.loads(a.model_params)
    elif a.model == "deepsurv":
        params = {"hidden": [32], "dropout": 0.1, "weight_decay": 1e-3}
    else:
        params = {"time_scale": 24.0, "val_fraction": 0.0}
    cfg = GridConfig(model=a.model, model_params=params, rounds=a.rounds, local_epochs=1,
                     seeds=tuple(range(a.seeds)), federations=(3, 5),
                     cases=("best", "worst") if a.worst_case else ("best",), n_boot=a.n_boot,
                     select_round=not a.fixed_rounds)
    t0 = time.time()
    res, rounds, extras = run_grid(df, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    if a.out:
        out_dir = Path(a.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = summarise(res)
        res.to_csv(out_dir / "results.csv", index=False)
        rounds.to_csv(out_dir / "rounds.csv", index=False)
        (out_dir / "summary.md").write_text(to_markdown(summary))
        write_plots(out_dir, summary, rounds, extras, cfg)
    best = res[res.case == "best"]

    def glob(setting):
        r = best[(best.setting == setting) & (best["eval"] == "global")]
        return r.sort_values("seed")

    out: dict = {"cohort": {"n": int(len(df)), "events": int(df.os_event.sum())},
                 "config": {"model": a.model, "model_params": params, "rounds": a.rounds,
                            "local_epochs": 1, "seeds": a.seeds, "select_round": not a.fixed_rounds, "test_fraction": 0.1,
                            "holdout_fraction": cfg.holdout_fraction},
                 "harrell_c": {}, "isolated_on_global": {}, "differences": {}}
    settings = ["centralised", "federated_3", "federated_5", "ipss_m", "ipss_r",
                "ipss_m_published", "ipss_r_published"]
    for s in settings:
        g = glob(s)
        if len(g):
            out["harrell_c"][s] = {**_ci(g.harrell_c), "boot95": [round(float(g.harrell_lo.mean()), 4),
                                                                 round(float(g.harrell_hi.mean()), 4)],
                                   "n_test": int(g.n.mean())}
    for key, setting in (("isolated", "isolated_3"), ("federated", "federated_3")):
        r = best[(best.setting == setting) & (best["eval"] != "global")]
        out["harrell_c"][key] = {node: _ci(g.sort_values("seed").harrell_c) for node, g in r.groupby("eval")}
    # Calibration: integrated Brier score on the same global test rows (lower is better) next
    # to the Kaplan-Meier curve of the same training rows; models only (scores give no curves).
    out["integrated_brier"] = {}
    for s in ("centralised", "federated_3", "federated_5"):
        g = glob(s)
        if len(g) and "ibs" in g:
            out["integrated_brier"][s] = {"model": _ci(g.ibs), "kaplan_meier": _ci(g.ibs_km),
                                          "model - kaplan_meier": _ci(g.ibs - g.ibs_km)}
    r = best[(best.setting == "isolated_3") & (best["eval"] == "global")]
    out["isolated_on_global"] = {node: _ci(g.sort_values("seed").harrell_c) for node, g in r.groupby("trained_on")}
    r5 = best[(best.setting == "isolated_5") & (best["eval"] != "global")]
    f5 = best[(best.setting == "federated_5") & (best["eval"] != "global")]
    out["harrell_c"]["isolated_5"] = {n: _ci(g.sort_values("seed").harrell_c) for n, g in r5.groupby("eval")}
    out["harrell_c"]["federated_5_nodes"] = {n: _ci(g.sort_values("seed").harrell_c) for n, g in f5.groupby("eval")}

    def diff(a_, b_):
        x, y = glob(a_).harrell_c.to_numpy(), glob(b_).harrell_c.to_numpy()
        return _ci(x - y) if len(x) == len(y) and len(x) else None

    for a_, b_ in (("federated_3", "centralised"), ("federated_5", "centralised"),
                   ("centralised", "ipss_m"), ("federated_3", "ipss_m"), ("federated_5", "ipss_m"),
                   ("centralised", "ipss_r")):
        out["differences"][f"{a_} - {b_}"] = diff(a_, b_)
    node_gain = {}
    for fed, iso in (("federated_3", "isolated_3"), ("federated_5", "isolated_5")):
        for node in sorted(best[best.setting == iso]["eval"].unique()):
            if node == "global":
                continue
            f = best[(best.setting == fed) & (best["eval"] == node)].sort_values("seed").harrell_c.to_numpy()
            i = best[(best.setting == iso) & (best["eval"] == node)].sort_values("seed").harrell_c.to_numpy()
            node_gain[f"{fed}:{node}"] = _ci(f - i)
    out["differences"]["federated - isolated per node (own test rows)"] = node_gain
    # The same comparison on the global test set: each node's isolated model against the
    # federated model, on ~256 patients instead of the node's own ~25-150.
    gain_global = {}
    for fed, iso in (("federated_3", "isolated_3"), ("federated_5", "isolated_5")):
        f = glob(fed).harrell_c.to_numpy()
        r = best[(best.setting == iso) & (best["eval"] == "global")]
        for node, g in r.groupby("trained_on"):
            i = g.sort_values("seed").harrell_c.to_numpy()
            gain_global[f"{fed}:{node}"] = _ci(f - i)
    out["differences"]["federated - isolated per node (global test set)"] = gain_global
    hc, d = out["harrell_c"], out["differences"]
    out["targets"] = {
        "federated within 0.01 of centralised (mean)": all(abs(d[f"{k} - centralised"]["mean"]) <= 0.01
                                                          for k in ("federated_3", "federated_5")),
        "centralised >= IPSS-M (mean)": d["centralised - ipss_m"]["mean"] >= 0,
        "federated >= IPSS-M (mean)": all(d[f"{k} - ipss_m"]["mean"] >= 0 for k in ("federated_3", "federated_5")),
        "every node: federated >= isolated (mean, own test rows)": all(v["mean"] >= 0 for v in node_gain.values()),
        "every node: federated >= isolated (mean, global test set)": all(v["mean"] >= 0 for v in gain_global.values()),
    }
    if a.worst_case:
        w = res[(res.case == "worst") & (res["eval"] == "global")]
        out["worst_case"] = {s: _ci(g.sort_values("seed").harrell_c)
                             for s, g in w[~w.setting.str.startswith("isolated")].groupby("setting")}
    out["seconds"] = round(time.time() - t0, 1)
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"IWG-PM, n={out['cohort']['n']}, {a.seeds} seeds, {a.model} {params}, {a.rounds} rounds")
        print("| setting | Harrell C mean | 95% CI over seeds | mean bootstrap 95% |")
        print("|---|---|---|---|")
        for s in settings:
            if s in hc:
                v = hc[s]
                print(f"| {s} | {v['mean']:.3f} | {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f} | {v['boot95'][0]:.3f}-{v['boot95'][1]:.3f} |")
        print("\n| setting | integrated Brier (model) | Kaplan-Meier | model - KM (95% CI over seeds) |")
        print("|---|---|---|---|")
        for s, v in out["integrated_brier"].items():
            dd = v["model - kaplan_meier"]
            print(f"| {s} | {v['model']['mean']:.4f} | {v['kaplan_meier']['mean']:.4f} | "
                  f"{dd['mean']:+.4f} ({dd['ci95'][0]:+.4f} to {dd['ci95'][1]:+.4f}) |")
        print("\n| node (3-node) | isolated | federated | isolated model on global test |")
        print("|---|---|---|---|")
        for node in hc["isolated"]:
            print(f"| {node} | {hc['isolated'][node]['mean']:.3f} | {hc['federated'][node]['mean']:.3f} | "
                  f"{out['isolated_on_global'][node]['mean']:.3f} |")
        print("\n| paired difference | mean | 95% CI |")
        print("|---|---|---|")
        for k, v in d.items():
            if isinstance(v, dict) and "mean" in v:
                print(f"| {k} | {v['mean']:+.4f} | {v['ci95'][0]:+.4f} to {v['ci95'][1]:+.4f} |")
        for label, gains in (("own test rows", node_gain), ("global test set", gain_global)):
            for k, v in gains.items():
                print(f"| {k} federated - isolated ({label}) | {v['mean']:+.4f} | {v['ci95'][0]:+.4f} to {v['ci95'][1]:+.4f} |")
        print("\ntargets:", json.dumps(out["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
