"""DeepSurv and SAVAE on the eight classic survival data sets, 5-fold cross-validation,
Antolini's time-dependent C next to the published table (Apellániz et al., Sci Rep 2024).

    python bench/survival_classic.py [--json] [--quick] [--datasets whas,pbc] [--models savae]
        [--epochs N] [--savae-epochs N] [--folds 5] [--savae-params JSON] [--categorical-levels 10]

Protocol per fold: the training folds are split 80/20 into fit / validation rows (seeded);
both models stop early on the validation loss (patience 10 for DeepSurv, 30 for SAVAE; at most
--epochs passes for DeepSurv, 100 by default, 30 with --quick, and --savae-epochs for SAVAE,
600 by default, 90 with --quick: SAVAE's validation loss still falls after 300 epochs on
gbsg and pbc) and keep their best weights. DeepSurv (fl_engine.models
build_model("deepsurv"), hidden (32, 32), dropout 0.1, Adam 1e-3, batch 64) gets imputed,
standardised, one-hot inputs; its Breslow baseline is fitted on all training folds. SAVAE
(fl_engine.models.savae defaults: J=5, H=50, Adam 1e-3, batch 64, KL and covariate weights 0.2)
gets the same encoding with NaN kept (masked in its likelihood) and time_scale = median training
time; --savae-params overrides constructor arguments for every data set alike (e.g.
'{"covariate_weight": 1, "kl_weight": 1}' for the published code's unweighted loss). Antolini C
on the test fold with the survival curves evaluated at the training event times. Prints mean +- sd over folds.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fl_engine.datasets.classic import CLASSIC_DATASETS, ClassicEncoder, infer_kinds, load_classic  # noqa: E402
from fedhaem_kernel.metrics import antolini_c  # noqa: E402
from fl_engine.models import build_model  # noqa: E402
from fl_engine.models.deepsurv import cox_ph_loss  # noqa: E402
from fl_engine.models.savae import SAVAE  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "survival_benchmarks"
# Published Antolini C, 5-fold CV (CoxPH, DeepSurv, SAVAE), from the SAVAE paper's table.
PUBLISHED = {"whas": (0.74, 0.78, 0.74), "gbsg": (0.66, 0.67, 0.67), "flchain": (0.69, 0.67, 0.79),
             "nwtco": (0.71, 0.70, 0.71), "pbc": (0.81, 0.80, 0.81), "std": (0.60, 0.60, 0.59),
             "pneumon": (0.62, 0.65, 0.65), "metabric": (0.59, 0.61, 0.61)}


def folds(n: int, k: int, seed: int, events: np.ndarray) -> list[np.ndarray]:
    """k test-index arrays, stratified by event."""
    rng = np.random.default_rng(seed)
    out = [[] for _ in range(k)]
    for v in (0, 1):
        idx = rng.permutation(np.flatnonzero(events == v))
        for j, chunk in enumerate(np.array_split(idx, k)):
            out[j] += chunk.tolist()
    return [np.sort(np.array(o, dtype=int)) for o in out]


def fit_deepsurv(x, d, e, xv, dv, ev, epochs, seed):
    m = build_model("deepsurv", x.shape[1], {"seed": seed})
    best, state, wait = np.inf, None, 0
    for ep in range(epochs):
        m.fit(x, d, e, epochs=1, seed=seed + ep)
        with torch.no_grad():
            v = float(cox_ph_loss(torch.as_tensor(m.predict_risk(xv), dtype=torch.float32),
                                  torch.as_tensor(dv, dtype=torch.float32), torch.as_tensor(ev, dtype=torch.float32)))
        if v < best - 1e-6:
            best, state, wait = v, copy.deepcopy(m.get_weights()), 0
        else:
            wait += 1
            if wait >= 10:
                break
    m.set_weights(state)
    return m


def _savae_kwargs(d, params: dict, **extra) -> dict:
    """SAVAE constructor arguments of this benchmark: patience 30, time_scale = median training
    time, then the --savae-params overrides, then `extra`."""
    return {"patience": 30, "time_scale": float(np.median(d)), **params, **extra}


def fit_savae(xn, kinds, d, e, epochs, seed, params, starts: int = 1):
    """SAVAE (module defaults, overridden by `params`) fitted on (xn, d, e). With starts > 1,
    that many initialisations are trained on the same fit/validation split and the one with the
    lowest validation loss is kept (the test fold plays no part in the choice)."""
    kw = _savae_kwargs(d, {"val_fraction": 0.2, **params})
    best, best_loss = None, np.inf
    for s in range(max(starts, 1)):
        sv = SAVAE(xn.shape[1], column_kinds=kinds, seed=seed + 7919 * s, **kw)
        loss = sv.fit(xn, d, e, epochs=epochs, seed=seed)["val_loss"]
        if best is None or loss < best_loss:
            best, best_loss = sv, loss
    return best


def _published_protocol(xn, kinds, d, e, xt, dt, et, grid, epochs, seed, params, seeds: int = 10,
                        keep: int = 3) -> float:
    """The SAVAE paper's own protocol, for comparison only (optimistic by design): every training
    row is fitted, early stopping watches the loss on the TEST fold, `seeds` initialisations are
    ranked by their test-fold C and the mean of the best `keep` is reported."""
    kw = _savae_kwargs(d, params)
    cs = []
    for s in range(seeds):
        sv = SAVAE(xn.shape[1], column_kinds=kinds, seed=seed + 7919 * s, **kw)
        sv.fit(xn, d, e, epochs=epochs, seed=seed + s, validation=(xt, dt, et))
        cs.append(antolini_c(dt, et, sv.predict_survival(xt, grid).T, grid))
    return float(np.mean(sorted(cs, reverse=True)[:keep]))


def _selected_weights(xn_fit, kinds, d_fit, e_fit, xn_val, d_val, e_val, xt, dt, et, grid, epochs, seed,
                      params, weights) -> tuple[float, float]:
    """SAVAE with its KL and covariate weights (both = w) chosen per fold among `weights` by the
    Antolini C on the validation rows (early stopping on their loss too); the test fold plays
    no part in the choice. Returns (test C of the chosen model, chosen w)."""
    best = None
    for w in weights:
        kw = _savae_kwargs(d_fit, params, kl_weight=w, covariate_weight=w)
        sv = SAVAE(xn_fit.shape[1], column_kinds=kinds, seed=seed, **kw)
        sv.fit(xn_fit, d_fit, e_fit, epochs=epochs, seed=seed, validation=(xn_val, d_val, e_val))
        c_val = antolini_c(d_val, e_val, sv.predict_survival(xn_val, grid).T, grid)
        if best is None or c_val > best[0]:
            best = (c_val, w, sv)
    return antolini_c(dt, et, best[2].predict_survival(xt, grid).T, grid), best[1]


def run(name: str, k: int, epochs: int, seed: int = 0, models=("deepsurv", "savae"),
        savae_epochs: int = 600, savae_params: dict | None = None, savae_starts: int = 1,
        published_protocol: bool = False, select_weights: tuple = (), categorical_levels: int = 10) -> dict:
    x_df, d, e = load_classic(name, DATA)
    res = {m: [] for m in models}
    chosen: list[float] = []
    for j, test in enumerate(folds(len(d), k, seed, e)):
        train = np.setdiff1d(np.arange(len(d)), test)
        rng = np.random.default_rng(seed + j)
        perm = rng.permutation(train)
        n_val = len(perm) // 5
        val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        enc = ClassicEncoder.fit(x_df.iloc[train], infer_kinds(x_df.iloc[train], categorical_levels))
        xi = {s: enc.transform(x_df.iloc[idx], impute=True)[0] for s, idx in (("fit", fit), ("val", val), ("test", test), ("train", train))}
        grid = np.unique(d[train][e[train] > 0])
        if "deepsurv" in models:
            ds = fit_deepsurv(xi["fit"], d[fit], e[fit], xi["val"], d[val], e[val], epochs, seed + j)
            ds.fit_baseline(xi["train"], d[train], e[train])
            res["deepsurv"].append(antolini_c(d[test], e[test], ds.predict_survival(xi["test"], grid).T, grid))
        if "savae" not in models:
            continue
        xn, kinds = enc.transform(x_df.iloc[train], impute=False)
        xt, _ = enc.transform(x_df.iloc[test], impute=False)
        sv = fit_savae(xn, kinds, d[train], e[train], savae_epochs, seed + j,
                       savae_params or {}, savae_starts)
        res["savae"].append(antolini_c(d[test], e[test], sv.predict_survival(xt, grid).T, grid))
        if select_weights:
            xf, _ = enc.transform(x_df.iloc[fit], impute=False)
            xv, _ = enc.transform(x_df.iloc[val], impute=False)
            c, w = _selected_weights(xf, kinds, d[fit], e[fit], xv, d[val], e[val], xt, d[test], e[test], grid,
                                     savae_epochs, seed + j, savae_params or {}, select_weights)
            res.setdefault("savae_selected_weights", []).append(c)
            chosen.append(w)
        if published_protocol:
            res.setdefault("savae_published_protocol", []).append(
                _published_protocol(xn, kinds, d[train], e[train], xt, d[test], e[test], grid,
                                    savae_epochs, seed + j, savae_params or {}))
    out = {m: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "folds": [round(x, 4) for x in v]}
           for m, v in res.items()}
    if chosen:
        out["savae_selected_weights"]["chosen"] = chosen
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="at most 30 DeepSurv epochs (90 SAVAE)")
    ap.add_argument("--epochs", type=int, default=None, help="max DeepSurv epochs (default 100)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--datasets", default=",".join(CLASSIC_DATASETS))
    ap.add_argument("--models", default="deepsurv,savae")
    ap.add_argument("--savae-epochs", type=int, default=None, help="max SAVAE epochs (default 600)")
    ap.add_argument("--savae-params", default="{}",
                    help='JSON object of SAVAE constructor overrides, e.g. \'{"latent_dim": 10}\'')
    ap.add_argument("--savae-starts", type=int, default=1,
                    help="SAVAE initialisations per fold; the lowest validation loss is kept")
    ap.add_argument("--published-protocol", action="store_true",
                    help="also report SAVAE under the paper's protocol (early stopping on the test "
                         "fold, best 3 of 10 seeds by test C): optimistic, for comparison only")
    ap.add_argument("--savae-select-weights", default="",
                    help="comma-separated candidate SAVAE loss weights (KL = covariate = w), chosen per "
                         "fold by the validation rows' C; reported as savae_selected_weights")
    ap.add_argument("--categorical-levels", type=int, default=10,
                    help="an integer column with 3 to N distinct values is categorical (one-hot, "
                         "categorical likelihood in SAVAE); more values: numeric (default 10; the "
                         "SAVAE paper's code uses 29 for columns starting at 0)")
    a = ap.parse_args(argv)
    try:
        select_weights = tuple(float(w) for w in a.savae_select_weights.split(",") if w.strip())
    except ValueError:
        ap.error(f"--savae-select-weights: not a list of numbers: {a.savae_select_weights!r}")
    if a.savae_starts < 1:
        ap.error(f"--savae-starts: must be >= 1, got {a.savae_starts}")
    try:
        savae_params = json.loads(a.savae_params)
    except json.JSONDecodeError as err:
        ap.error(f"--savae-params: not JSON ({err})")
    if not isinstance(savae_params, dict):
        ap.error(f"--savae-params: expected a JSON object, got {a.savae_params!r}")
    known = set(inspect.signature(SAVAE).parameters) - {"n_features", "column_kinds"}
    if set(savae_params) - known:
        ap.error(f"--savae-params: unknown SAVAE argument(s) {sorted(set(savae_params) - known)}")
    if not DATA.is_dir():
        print(f"survival benchmarks not found at {DATA}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    epochs = a.epochs or (30 if a.quick else 100)
    savae_epochs = a.savae_epochs or (90 if a.quick else 600)
    out = {"protocol": {"folds": a.folds, "max_epochs_deepsurv": epochs,
                        "max_epochs_savae": savae_epochs,
                        "savae_params": savae_params, "savae_starts": a.savae_starts,
                        "categorical_levels": a.categorical_levels,
                        "metric": "Antolini time-dependent C, mean over folds"}, "datasets": {}}
    for name in a.datasets.split(","):
        t0 = time.time()
        r = run(name, a.folds, epochs, models=tuple(a.models.split(",")), savae_epochs=savae_epochs,
                savae_params=savae_params, savae_starts=a.savae_starts,
                published_protocol=a.published_protocol, select_weights=select_weights,
                categorical_levels=a.categorical_levels)
        r["published"] = dict(zip(("coxph", "deepsurv", "savae"), PUBLISHED[name]))
        r["seconds"] = round(time.time() - t0, 1)
        out["datasets"][name] = r
        print(f"{name}: " + ", ".join(f"{m} {r[m]['mean']:.3f} (published {r['published'][m]:.2f})"
                                      for m in ("deepsurv", "savae") if m in r)
              + (f", savae with weights chosen on validation {r['savae_selected_weights']['mean']:.3f}"
                 if "savae_selected_weights" in r else "")
              + (f", savae under the paper's protocol {r['savae_published_protocol']['mean']:.3f}"
                 if "savae_published_protocol" in r else "") + f" [{r['seconds']} s]",
              file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print("| data set | DeepSurv (ours) | DeepSurv (published) | SAVAE (ours) | SAVAE (published) | CoxPH (published) |")
        print("|---|---|---|---|---|---|")
        def cell(r, m):
            return f"{r[m]['mean']:.3f} ± {r[m]['sd']:.3f}" if m in r else "-"
        for name, r in out["datasets"].items():
            p = r["published"]
            print(f"| {name} | {cell(r, 'deepsurv')} | {p['deepsurv']:.2f} | {cell(r, 'savae')} | "
                  f"{p['savae']:.2f} | {p['coxph']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
