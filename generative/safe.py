"""SAFE validation of a synthetic cohort, computed where the real data is.

Each node runs :func:`node_validate` on the synthetic cohort (which every node may see) and its
own patients and returns only aggregates: counts and sums (empirical-CDF counts on a grid taken
from the synthetic data, category counts, first and second moments, grouped survival counts),
node-level scores, privacy histograms and a C-index. The manager sums the aggregates with
:func:`manager_pool`, so the pooled fidelity scores equal those computed on the pooled real
data; privacy and utility figures are pooled from per-node histograms and patient-weighted means.

Scores (definitions in docs/synthetic.md):
- CSF (Clinical Synthetic Fidelity) = mean of: 1 - KS distance per numeric clinical /
  cytogenetic / therapy column, 1 - total-variation distance per binary or categorical one,
  1 - mean absolute difference of their correlation matrices, 1 - sup distance between the
  Kaplan-Meier curves.
- GSF (Genomic Synthetic Fidelity) = mean of: mutation-frequency score, 1 - mean absolute
  difference of gene-gene phi coefficients, direction agreement of significant gene pairs, F1
  of significant gene pairs (Fisher's exact test, Benjamini-Hochberg FDR).
Both lie in [0, 1], 1 = indistinguishable. The SAFE framework is D'Amico et al., JCO Clin Cancer
Inform 2023;7:e2300021; its exact formulas are unpublished, these are ours.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from fedhaem_kernel.metrics import harrell_c

from .spec import TableSpec
from .transform import to_model_scale


@dataclass(frozen=True)
class SafeConfig:
    grid_points: int = 256  # quantiles of the synthetic data where empirical CDFs are compared
    time_step_months: float = 3.0  # life-table interval for pooled Kaplan-Meier and log-rank
    fdr: float = 0.05  # Benjamini-Hochberg level for gene-pair tests
    cox_penalizer: float = 0.1
    rare_k: int = 5  # a quasi-identifier combination seen in fewer than k real patients is rare
    qi_bins: int = 5  # quantile bins of numeric quasi-identifiers
    mia_max: int = 2000
    seed: int = 0


NNDR_EDGES = np.linspace(0.0, 1.0, 201)
DCR_EDGES = np.concatenate([[0.0], np.logspace(-4, 2.5, 261)])


# ================================================================== shared encodings
def _grid(synthetic: pd.DataFrame, spec: TableSpec, cfg: SafeConfig) -> dict[str, np.ndarray]:
    """Comparison points per numeric column (model scale): synthetic quantiles."""
    p = np.linspace(0, 1, cfg.grid_points)
    return {c.name: np.unique(np.quantile(to_model_scale(c, synthetic[c.name].to_numpy()), p))
            for c in spec.of_kind("numeric")}


def _moment_matrix(data: pd.DataFrame, spec: TableSpec) -> tuple[list[str], np.ndarray]:
    """Columns for correlations: numeric (model scale), binary, one-hot categories."""
    names, cols = [], []
    for c in spec.columns:
        if c.kind == "numeric":
            names.append(c.name)
            cols.append(to_model_scale(c, data[c.name].to_numpy()))
        elif c.kind == "binary":
            names.append(c.name)
            cols.append(data[c.name].to_numpy().astype(float))
        else:
            v = data[c.name].to_numpy()
            for k in c.categories:
                names.append(f"{c.name}={k}")
                cols.append((v == k).astype(float))
    return names, np.column_stack(cols)


def _time_grid(spec: TableSpec, synthetic: pd.DataFrame, cfg: SafeConfig) -> np.ndarray:
    hi = float(synthetic[spec.duration].max())
    c = spec.column(spec.duration)
    if c.maximum is not None:
        hi = max(hi, float(c.maximum))
    return np.arange(0.0, hi + cfg.time_step_months, cfg.time_step_months)


def aggregate_stats(data: pd.DataFrame, spec: TableSpec, grid: dict, time_grid: np.ndarray | None) -> dict:
    """Counts and sums of a validated table (n rows): the only real-data output of fidelity."""
    out = {"n": int(len(data)), "ecdf": {}, "cat": {}}
    for c in spec.columns:
        if c.kind == "numeric":
            z = to_model_scale(c, data[c.name].to_numpy())
            # counts of z <= grid[j] for each grid point
            out["ecdf"][c.name] = np.searchsorted(np.sort(z), grid[c.name], side="right").astype(np.int64)
        elif c.kind == "binary":
            v = data[c.name].to_numpy()
            out["cat"][c.name] = np.array([(v == 0).sum(), (v == 1).sum()], dtype=np.int64)
        else:
            v = data[c.name].to_numpy()
            out["cat"][c.name] = np.array([(v == k).sum() for k in c.categories], dtype=np.int64)
    _, m = _moment_matrix(data, spec)
    out["sum"] = m.sum(0)
    out["cross"] = m.T @ m
    if time_grid is not None and spec.duration:
        t = data[spec.duration].to_numpy()
        e = data[spec.event].to_numpy().astype(bool)
        j = np.clip(np.searchsorted(time_grid, t, side="right") - 1, 0, len(time_grid) - 1)
        out["events"] = np.bincount(j[e], minlength=len(time_grid)).astype(np.int64)
        out["censored"] = np.bincount(j[~e], minlength=len(time_grid)).astype(np.int64)
    return out


def _sum_stats(parts: list[dict]) -> dict:
    out = {"n": sum(p["n"] for p in parts), "ecdf": {}, "cat": {}}
    for key in ("ecdf", "cat"):
        for name in parts[0][key]:
            out[key][name] = np.sum([np.asarray(p[key][name]) for p in parts], axis=0)
    for key in ("sum", "cross", "events", "censored"):
        if key in parts[0]:
            out[key] = np.sum([np.asarray(p[key]) for p in parts], axis=0)
    return out


# ================================================================== fidelity scores
def _corr(st: dict) -> np.ndarray:
    n = st["n"]
    mean = np.asarray(st["sum"]) / n
    cov = np.asarray(st["cross"]) / n - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = cov / np.outer(sd, sd)
    c[~np.isfinite(c)] = np.nan
    return c


def _km(st: dict) -> np.ndarray:
    d, c = np.asarray(st["events"], float), np.asarray(st["censored"], float)
    at_risk = st["n"] - np.concatenate([[0], np.cumsum(d + c)[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(at_risk > 0, d / at_risk, 0.0)
    return np.cumprod(1 - h)


def _logrank(a: dict, b: dict) -> tuple[float, float]:
    """Log-rank test on grouped survival counts; returns (chi2, p)."""
    da, ca = np.asarray(a["events"], float), np.asarray(a["censored"], float)
    db, cb = np.asarray(b["events"], float), np.asarray(b["censored"], float)
    ra = a["n"] - np.concatenate([[0], np.cumsum(da + ca)[:-1]])
    rb = b["n"] - np.concatenate([[0], np.cumsum(db + cb)[:-1]])
    r, d = ra + rb, da + db
    ok = (r > 1) & (d > 0)
    e = d[ok] * ra[ok] / r[ok]
    v = d[ok] * (ra[ok] / r[ok]) * (rb[ok] / r[ok]) * (r[ok] - d[ok]) / (r[ok] - 1)
    if v.sum() <= 0:
        return 0.0, 1.0
    chi2 = float((da[ok].sum() - e.sum()) ** 2 / v.sum())
    return chi2, float(stats.chi2.sf(chi2, 1))


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    n = len(p)
    if n == 0:
        return p
    o = np.argsort(p)
    q = p[o] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[o] = np.minimum(q, 1.0)
    return out


def _gene_pairs(st: dict, idx: list[int], fdr: float) -> dict:
    n = st["n"]
    s, x = np.asarray(st["sum"]), np.asarray(st["cross"])
    rows = []
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            i, j = idx[a], idx[b]
            n11 = int(round(x[i, j]))
            n10 = int(round(s[i])) - n11
            n01 = int(round(s[j])) - n11
            n00 = n - n11 - n10 - n01
            p = stats.fisher_exact([[n11, n10], [n01, n00]])[1] if min(s[i], s[j]) > 0 else 1.0
            lor = np.log((n11 + 0.5) * (n00 + 0.5) / ((n10 + 0.5) * (n01 + 0.5)))
            rows.append((p, np.sign(lor)))
    p = np.array([r[0] for r in rows])
    q = _bh(p)
    sign = np.array([r[1] for r in rows])
    return {"q": q, "sign": sign, "significant": q < fdr}


def fidelity_scores(real: dict, synth: dict, spec: TableSpec, cfg: SafeConfig = SafeConfig()) -> dict:
    """CSF, GSF and their component tests from two aggregate-stat dicts (see module doc)."""
    tests: dict[str, float] = {}
    clinical = [c for c in spec.columns if c.group not in ("genomic", "survival")]
    for c in clinical:
        if c.kind == "numeric":
            fr = np.asarray(real["ecdf"][c.name]) / real["n"]
            fs = np.asarray(synth["ecdf"][c.name]) / synth["n"]
            tests[f"ks:{c.name}"] = float(np.max(np.abs(fr - fs))) if len(fr) else 0.0
        else:
            pr = np.asarray(real["cat"][c.name]) / real["n"]
            ps = np.asarray(synth["cat"][c.name]) / synth["n"]
            tests[f"tv:{c.name}"] = float(0.5 * np.abs(pr - ps).sum())
    names, _ = _moment_matrix_names(spec)
    cr, cs = _corr(real), _corr(synth)
    clin_idx = [i for i, nm in enumerate(names) if spec.column(nm.split("=")[0]).group not in ("genomic", "survival")]
    tests["corr_distance:clinical"] = _mean_offdiag_absdiff(cr, cs, clin_idx)
    tests["corr_distance:all"] = _mean_offdiag_absdiff(cr, cs, list(range(len(names))))
    csf_parts = [1 - v for k, v in tests.items() if k.startswith(("ks:", "tv:"))]
    csf_parts.append(max(0.0, 1 - tests["corr_distance:clinical"]))
    surv = {}
    if spec.duration and "events" in real and "events" in synth:
        kr, ks = _km(real), _km(synth)
        surv = {"km_real": kr, "km_synthetic": ks}
        tests["km_sup_distance"] = float(np.max(np.abs(kr - ks)))
        tests["logrank_chi2"], tests["logrank_p"] = _logrank(real, synth)
        csf_parts.append(1 - tests["km_sup_distance"])
    genes = spec.genes
    gsf = float("nan")
    if len(genes) >= 2:
        gidx = [names.index(g) for g in genes]
        fr = np.asarray(real["sum"])[gidx] / real["n"]
        fs = np.asarray(synth["sum"])[gidx] / synth["n"]
        tests["mutation_frequency_score"] = float(np.clip(1 - np.abs(fr - fs).sum() / max(fr.sum(), 1e-12), 0, 1))
        tests["phi_distance"] = _mean_offdiag_absdiff(cr, cs, gidx)
        pr, ps = _gene_pairs(real, gidx, cfg.fdr), _gene_pairs(synth, gidx, cfg.fdr)
        sig_r, sig_s = pr["significant"], ps["significant"]
        both = sig_r & sig_s & (pr["sign"] == ps["sign"])
        tests["significant_pairs_real"] = int(sig_r.sum())
        tests["significant_pairs_synthetic"] = int(sig_s.sum())
        tests["significant_pairs_agreeing"] = int(both.sum())
        tests["pair_direction_agreement"] = float((pr["sign"][sig_r] == ps["sign"][sig_r]).mean()) if sig_r.any() else 1.0
        denom = sig_r.sum() + sig_s.sum()
        tests["pair_f1"] = float(2 * both.sum() / denom) if denom else 1.0
        gsf = float(np.mean([tests["mutation_frequency_score"], max(0.0, 1 - tests["phi_distance"]),
                             tests["pair_direction_agreement"], tests["pair_f1"]]))
        tests["mutation_frequency_real"] = fr
        tests["mutation_frequency_synthetic"] = fs
    return {"csf": float(np.mean(csf_parts)), "gsf": gsf, "tests": tests, "survival": surv}


def _moment_matrix_names(spec: TableSpec) -> tuple[list[str], None]:
    names = []
    for c in spec.columns:
        if c.kind == "categorical":
            names += [f"{c.name}={k}" for k in c.categories]
        else:
            names.append(c.name)
    return names, None


def _mean_offdiag_absdiff(a: np.ndarray, b: np.ndarray, idx: list[int]) -> float:
    if len(idx) < 2:
        return 0.0
    sa, sb = a[np.ix_(idx, idx)], b[np.ix_(idx, idx)]
    iu = np.triu_indices(len(idx), 1)
    d = np.abs(sa[iu] - sb[iu])
    # a column constant on one side has no correlation: count it as agreeing with 0
    d = np.where(np.isnan(d), np.abs(np.nan_to_num(sa[iu]) - np.nan_to_num(sb[iu])), d)
    return float(np.mean(d))


# ================================================================== utility: TSTR
def _cox_design(data: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    cols = {}
    for c in spec.columns:
        if c.group == "survival":
            continue
        if c.kind == "numeric":
            cols[c.name] = to_model_scale(c, data[c.name].to_numpy())
        elif c.kind == "binary":
            cols[c.name] = data[c.name].to_numpy().astype(float)
        else:
            v = data[c.name].to_numpy()
            for k in c.categories[1:]:
                cols[f"{c.name}={k}"] = (v == k).astype(float)
    return pd.DataFrame(cols)


def fit_tstr_model(synthetic: pd.DataFrame, spec: TableSpec, cfg: SafeConfig = SafeConfig()) -> dict:
    """Manager side: penalised Cox model (lifelines, penalizer cfg.cox_penalizer) on the
    synthetic rows -> message {"columns", "beta", "center", "scale"} (linear predictor)."""
    from lifelines import CoxPHFitter  # heavy (~0.6 s): only a TSTR fit needs it

    x = _cox_design(spec.validate(synthetic, where="fit_tstr_model"), spec)
    sd = x.std(ddof=0)
    keep = sd[sd > 1e-9].index.tolist()
    xs = (x[keep] - x[keep].mean()) / sd[keep]
    xs["T"] = np.maximum(synthetic[spec.duration].to_numpy(dtype=float), 1e-3)
    xs["E"] = synthetic[spec.event].to_numpy(dtype=int)
    cph = CoxPHFitter(penalizer=cfg.cox_penalizer).fit(xs, "T", "E")
    return {"columns": keep, "beta": cph.params_[keep].to_numpy(),
            "center": x[keep].mean().to_numpy(), "scale": sd[keep].to_numpy()}


def tstr_risk(model: dict, data: pd.DataFrame, spec: TableSpec) -> np.ndarray:
    """Linear predictor (n,) of a TSTR Cox message on a validated table (higher = worse)."""
    x = _cox_design(data, spec)
    for col in model["columns"]:
        if col not in x:
            x[col] = 0.0
    x = x[model["columns"]].to_numpy()
    return ((x - np.asarray(model["center"])) / np.asarray(model["scale"])) @ np.asarray(model["beta"])


# ================================================================== privacy
def _distance_encoding(data: pd.DataFrame, spec: TableSpec, ref: pd.DataFrame) -> np.ndarray:
    """Numeric: model scale standardised by the node's real rows; binary 0/1; categorical
    one-hot / sqrt(2) (a category mismatch costs 1, like a binary one)."""
    cols = []
    for c in spec.columns:
        if c.kind == "numeric":
            zr = to_model_scale(c, ref[c.name].to_numpy())
            cols.append((to_model_scale(c, data[c.name].to_numpy()) - zr.mean()) / max(zr.std(), 1e-9))
        elif c.kind == "binary":
            cols.append(data[c.name].to_numpy().astype(float))
        else:
            v = data[c.name].to_numpy()
            cols += [(v == k).astype(float) / np.sqrt(2) for k in c.categories]
    return np.column_stack(cols)


def _qi_keys(data: pd.DataFrame, spec: TableSpec, edges: dict) -> np.ndarray:
    parts = []
    for q in spec.quasi_identifiers:
        c = spec.column(q)
        v = data[q].to_numpy()
        parts.append(np.searchsorted(edges[q], v, side="right").astype(str) if c.kind == "numeric" else v.astype(str))
    return np.array(["|".join(t) for t in zip(*parts)]) if parts else np.array([""] * len(data))


def privacy_stats(synthetic: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame | None,
                  spec: TableSpec, cfg: SafeConfig = SafeConfig()) -> dict:
    """Node side: histograms of NNDR and distance to closest record (synthetic rows and, as a
    baseline, real holdout rows, both against the training rows), exact copies,
    membership-inference AUC and rare-combination counts. NNDR as in CTAB-GAN (Zhao et al.
    2021): distance to the nearest over the second-nearest real record."""
    from sklearn.neighbors import NearestNeighbors  # scikit-learn loads only where privacy is scored

    rng = np.random.default_rng(cfg.seed)
    tr = _distance_encoding(train, spec, train)
    sy = _distance_encoding(synthetic, spec, train)
    nn = NearestNeighbors(n_neighbors=2).fit(tr)
    out: dict = {"n_train": int(len(train)), "n_synthetic": int(len(synthetic))}

    def nn_stats(x, prefix):
        d, _ = nn.kneighbors(x)
        nndr = (d[:, 0] + 1e-8) / (d[:, 1] + 1e-8)
        out[f"{prefix}_nndr_hist"] = np.histogram(np.clip(nndr, 0, 1), NNDR_EDGES)[0].astype(np.int64)
        out[f"{prefix}_dcr_hist"] = np.histogram(np.clip(d[:, 0], 0, DCR_EDGES[-1]), DCR_EDGES)[0].astype(np.int64)
        out[f"{prefix}_exact"] = int((d[:, 0] < 1e-6).sum())  # float error of the NN distances
        out[f"{prefix}_n"] = int(len(x))

    nn_stats(sy, "synthetic")
    edges = {}
    for q in spec.quasi_identifiers:
        c = spec.column(q)
        if c.kind == "numeric":
            edges[q] = np.unique(np.quantile(train[q].to_numpy(), np.linspace(0, 1, cfg.qi_bins + 1)[1:-1]))
    tr_keys = _qi_keys(train, spec, edges)
    keys, counts = np.unique(tr_keys, return_counts=True)
    rare = set(keys[counts < cfg.rare_k])
    out["rare_cells_real"] = int(len(rare))
    out["synthetic_in_rare"] = int(np.isin(_qi_keys(synthetic, spec, edges), list(rare)).sum()) if rare else 0
    if holdout is not None and len(holdout) >= 2:
        ho = _distance_encoding(holdout, spec, train)
        nn_stats(ho, "holdout")
        out["holdout_in_rare"] = int(np.isin(_qi_keys(holdout, spec, edges), list(rare)).sum()) if rare else 0
        # membership inference: members (training rows) should not sit closer to the synthetic
        # rows than non-members (holdout rows) do
        m = min(len(ho), len(tr), cfg.mia_max)
        mem = tr[rng.choice(len(tr), m, replace=False)]
        non = ho[rng.choice(len(ho), m, replace=False)]
        nns = NearestNeighbors(n_neighbors=1).fit(sy)
        s_mem = -nns.kneighbors(mem)[0][:, 0]
        s_non = -nns.kneighbors(non)[0][:, 0]
        ranks = stats.rankdata(np.concatenate([s_mem, s_non]))
        out["mia_auc"] = float((ranks[:m].sum() - m * (m + 1) / 2) / (m * m))
        out["mia_n"] = int(m)
    return out


def _hist_quantile(hist: np.ndarray, edges: np.ndarray, q: float) -> float:
    c = np.cumsum(hist)
    if c[-1] == 0:
        return float("nan")
    target = q * c[-1]
    j = int(np.searchsorted(c, target, side="left"))
    prev = c[j - 1] if j else 0
    frac = (target - prev) / max(hist[j], 1)
    return float(edges[j] + frac * (edges[j + 1] - edges[j]))


def pool_privacy(parts: list[dict]) -> dict:
    """Manager side: pooled privacy figures from node privacy stats."""
    out: dict = {}
    for prefix in ("synthetic", "holdout"):
        if not all(f"{prefix}_n" in p for p in parts):
            continue
        nndr = np.sum([p[f"{prefix}_nndr_hist"] for p in parts], axis=0)
        dcr = np.sum([p[f"{prefix}_dcr_hist"] for p in parts], axis=0)
        n = sum(p[f"{prefix}_n"] for p in parts)
        out[f"{prefix}_nndr_p5"] = _hist_quantile(nndr, NNDR_EDGES, 0.05)
        out[f"{prefix}_dcr_p5"] = _hist_quantile(dcr, DCR_EDGES, 0.05)
        # every node checks the same synthetic rows (a copy of any node's patient counts once);
        # holdout rows are distinct per node
        denom = parts[0]["synthetic_n"] if prefix == "synthetic" else n
        out[f"{prefix}_exact_copy_rate"] = float(sum(p[f"{prefix}_exact"] for p in parts) / denom)
        key = "synthetic_in_rare" if prefix == "synthetic" else "holdout_in_rare"
        w = np.array([p["n_train"] for p in parts], dtype=float)
        rates = np.array([p.get(key, 0) / p[f"{prefix}_n"] for p in parts])
        out[f"{prefix}_rare_combination_rate"] = float((w * rates).sum() / w.sum())
    out["nndr_p5"] = out.get("synthetic_nndr_p5", float("nan"))
    out["dcr_p5"] = out.get("synthetic_dcr_p5", float("nan"))
    mia = [(p["mia_auc"], p["mia_n"]) for p in parts if "mia_auc" in p]
    out["mia_auc"] = float(sum(a * n for a, n in mia) / sum(n for _, n in mia)) if mia else float("nan")
    out["rare_cells_real"] = int(sum(p["rare_cells_real"] for p in parts))
    return out


# ================================================================== node / manager
def node_validate(synthetic: pd.DataFrame, real_train: pd.DataFrame, real_holdout: pd.DataFrame | None,
                  spec: TableSpec, *, tstr_model: dict | None = None,
                  parts: tuple[str, ...] = ("fidelity", "utility", "privacy"),
                  cfg: SafeConfig = SafeConfig()) -> dict:
    """Node side: score a synthetic cohort against this node's patients. Returns aggregates
    only (counts, sums, histograms, scores; no rows). ``real_train`` = rows the generator saw,
    ``real_holdout`` = rows it did not (privacy baseline, TSTR test set)."""
    syn = spec.validate(synthetic, where="node_validate synthetic")
    tr = spec.validate(real_train, where="node_validate real_train")
    ho = spec.validate(real_holdout, where="node_validate real_holdout") if real_holdout is not None else None
    out: dict = {"n_train": int(len(tr)), "n_holdout": int(len(ho)) if ho is not None else 0,
                 "n_synthetic": int(len(syn)), "parts": list(parts)}
    if "fidelity" in parts:
        grid = _grid(syn, spec, cfg)
        tg = _time_grid(spec, syn, cfg) if spec.duration else None
        out["stats"] = aggregate_stats(tr, spec, grid, tg)
        own = fidelity_scores(out["stats"], aggregate_stats(syn, spec, grid, tg), spec, cfg)
        out["scores"] = {"csf": own["csf"], "gsf": own["gsf"]}
    if "utility" in parts and ho is not None and spec.duration:
        model = tstr_model if tstr_model is not None else fit_tstr_model(syn, spec, cfg)
        risk = tstr_risk(model, ho, spec)
        out["tstr"] = {"c_index": harrell_c(ho[spec.duration].to_numpy(), ho[spec.event].to_numpy(), risk),
                       "n": int(len(ho))}
    if "privacy" in parts:
        out["privacy"] = privacy_stats(syn, tr, ho, spec, cfg)
    return out


def manager_pool(node_reports: list[dict], synthetic: pd.DataFrame, spec: TableSpec,
                 cfg: SafeConfig = SafeConfig()) -> dict:
    """Manager side: pooled SAFE report (JSON-ready) from node reports and the synthetic rows."""
    if not node_reports:
        raise ValueError("manager_pool: no node reports")
    syn = spec.validate(synthetic, where="manager_pool synthetic")
    report: dict = {"n_nodes": len(node_reports), "n_real": int(sum(r["n_train"] for r in node_reports)),
                    "n_synthetic": int(len(syn)), "config": asdict(cfg),
                    "nodes": [{"n_train": r["n_train"], **r.get("scores", {}),
                               **({"tstr_c_index": r["tstr"]["c_index"]} if "tstr" in r else {})}
                              for r in node_reports]}
    if all("stats" in r for r in node_reports):
        grid = _grid(syn, spec, cfg)
        tg = _time_grid(spec, syn, cfg) if spec.duration else None
        real = _sum_stats([r["stats"] for r in node_reports])
        fid = fidelity_scores(real, aggregate_stats(syn, spec, grid, tg), spec, cfg)
        report["csf"], report["gsf"] = fid["csf"], fid["gsf"]
        report["tests"] = _jsonable(fid["tests"])
        if fid["survival"]:
            report["survival"] = {"time_months": tg.tolist(), **_jsonable(fid["survival"])}
    tstr = [(r["tstr"]["c_index"], r["tstr"]["n"]) for r in node_reports
            if "tstr" in r and np.isfinite(r["tstr"]["c_index"])]
    if tstr:
        report["tstr_c_index"] = float(sum(c * n for c, n in tstr) / sum(n for _, n in tstr))
    if all("privacy" in r for r in node_reports):
        report["privacy"] = pool_privacy([r["privacy"] for r in node_reports])
        report["nndr_p5"] = report["privacy"]["nndr_p5"]
    return report


def node_own_scores(synthetic: pd.DataFrame, real_train: pd.DataFrame, real_holdout: pd.DataFrame | None,
                    spec: TableSpec, seed: int) -> dict:
    """CSF, GSF, NNDR p5 (and the holdout's NNDR p5) of a node's own synthetic rows against its
    own patients, computed on the node: {"csf", "gsf", "nndr_p5", "holdout_nndr_p5"}, None where
    not measured."""
    cfg = SafeConfig(seed=seed)
    rep = manager_pool([node_validate(synthetic, real_train, real_holdout, spec, parts=("fidelity", "privacy"),
                                      cfg=cfg)], synthetic, spec, cfg)
    return {"csf": rep.get("csf"), "gsf": rep.get("gsf"), "nndr_p5": rep.get("nndr_p5"),
            "holdout_nndr_p5": rep.get("privacy", {}).get("holdout_nndr_p5")}


def validate_federation(synthetic: pd.DataFrame, nodes: list[tuple[pd.DataFrame, pd.DataFrame | None]],
                        spec: TableSpec, *, parts=("fidelity", "utility", "privacy"),
                        cfg: SafeConfig = SafeConfig()) -> dict:
    """Simulation helper: every node validates (train, holdout), the manager pools."""
    model = fit_tstr_model(synthetic, spec, cfg) if "utility" in parts and spec.duration else None
    reports = [node_validate(synthetic, tr, ho, spec, tstr_model=model, parts=parts, cfg=cfg) for tr, ho in nodes]
    return manager_pool(reports, synthetic, spec, cfg)


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, np.ndarray):
        return d.tolist()
    if isinstance(d, (np.floating, np.integer)):
        return d.item()
    return d
