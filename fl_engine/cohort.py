"""Generated cohorts for tests, demos and the experiment grid: MDS (generate_mds_cohort, the
model below) and sickle cell disease (generate_scd_cohort, its model in that function's
docstring and docs/scd.md).

Generative model (seeded, one `numpy.random.Generator`):

1. Latent molecular subtype. Every patient belongs to one of five latent classes; given the
   class, each gene and cytogenetic flag is an independent Bernoulli draw. Class weights and
   per-class probabilities (`_CLASS_WEIGHTS`, `_CLASS_P`) come from a 5-class Bernoulli mixture
   (EM, BIC-selected among 4-7 classes) fitted by us on the IWG-PM cohort (Bernard et al., NEJM
   Evidence 2022; files df_mut.tsv / df_cna.tsv / df_clinical.tsv, n=2,957); only the rounded
   mixture parameters are kept here, no patient row. The mixture reproduces marginal
   frequencies (TET2 ~31%, ASXL1 ~25%, SF3B1 ~24%, DNMT3A ~16%, SRSF2 ~16%, RUNX1 ~13%,
   TP53 ~11%) and the main co-occurrences: SRSF2 with TET2, ASXL1 with STAG2/RUNX1/EZH2,
   TP53 with del(5q)/-7/complex karyotype and multi-hit TP53. The splicing-factor genes
   (SF3B1, SRSF2, U2AF1, ZRSR2) are nearly mutually exclusive in MDS, so a second splicing hit
   is dropped with probability 0.9.
2. Clinical variables per class: age ~ Normal, Hb ~ Normal, platelets / ANC / WBC /
   monocytes / bone-marrow blasts log-normal, peripheral blasts zero-inflated log-normal; class
   means and spreads are posterior-weighted IWG-PM moments. ANC is tied to WBC. Ring
   sideroblasts are high with SF3B1. `cyto_ipssr` follows the IPSS-R cytogenetic rules
   (Greenberg et al., Blood 2012) applied to the flags, with some noise for abnormalities we do
   not model (-Y, del(11q), others).
3. TP53: `tp53_count` 1-3 mutations, `tp53_maxvaf` ~ Beta(2, 3.5) (IWG-PM median VAF 0.33),
   `tp53_loh` (del(17p) or CN-LOH); multi-hit TP53 (>=2 mutations or LOH) follows the
   mixture's TP53multi probability.
4. Therapy flags by indication: lenalidomide for del(5q) with few blasts, HMA for higher blasts
   or poor cytogenetics, allogeneic transplant for younger higher-risk patients.
5. Outcomes (months). Two latent event times: death without AML (Weibull, shape 1.15) and AML
   transformation (Weibull, shape 1.0), each with a proportional-hazards log-risk that
   contains effects a linear Cox model on the raw covariates cannot represent:
   - a threshold effect of bone-marrow blasts (steps at 5% and 10%, not a slope),
   - a hinge in age (flat below 60, steep above) and in haemoglobin (only below 10 g/dL),
   - platelets below 50 x10^9/L as a step,
   - an interaction: multi-hit TP53 with complex karyotype adds a large extra hazard
     (the combination of TP53 alone and complex alone is far below it),
   - SF3B1 is favourable only without SRSF2 / RUNX1 / STAG2 / BCOR co-mutation (IPSS-M's
     SF3B1 alpha, Bernard et al. 2022).
   After AML, survival is exponential with median 7 months. OS = death (any cause);
   LFS = AML or death; AMLt = AML, death without AML censors it.
   Censoring: administrative (uniform 6-144 months of follow-up) and loss to follow-up
   (exponential, 3% per year). About half of the OS times are events.
6. Missing values like a real export, completely at random: PB blasts ~19%, monocytes ~18%,
   WBC ~9%, ANC ~6%, Hb/PLT/BM blasts ~4%, age ~1%, ring sideroblasts ~50%; no karyotype
   (all cytogenetic columns missing) ~5%; no NGS panel (all genomic columns missing) ~2%; and
   the rarer genes missing for an older panel ~6%.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import MDS, MDS_GENES, SCD

# Latent class weights and P(flag | class), five classes, from the IWG-PM mixture fit above.
# Reading the classes: 0 SF3B1 / TET2 / DNMT3A / del(5q) lower risk; 1 ASXL1 / U2AF1 / RUNX1
# / -7; 2 SRSF2 + TET2 (CMML-like); 3 ASXL1 + STAG2 / RUNX1 / EZH2 (secondary-type);
# 4 TP53 multi-hit, complex karyotype.
_CLASS_WEIGHTS = (0.573, 0.152, 0.108, 0.089, 0.078)
_CLASS_P = {
    "TP53": (0.045, 0.038, 0.032, 0.010, 0.963),
    "MLL_PTD": (0.013, 0.067, 0.034, 0.017, 0.029),
    "FLT3": (0.002, 0.027, 0.005, 0.019, 0.006),
    "ASXL1": (0.122, 0.451, 0.219, 0.987, 0.031),
    "CBL": (0.028, 0.090, 0.094, 0.077, 0.016),
    "DNMT3A": (0.193, 0.188, 0.074, 0.041, 0.135),
    "ETV6": (0.003, 0.089, 0.045, 0.021, 0.006),
    "EZH2": (0.022, 0.109, 0.008, 0.298, 0.037),
    "IDH2": (0.019, 0.034, 0.111, 0.171, 0.007),
    "KRAS": (0.011, 0.070, 0.053, 0.050, 0.007),
    "NPM1": (0.007, 0.039, 0.010, 0.006, 0.007),
    "NRAS": (0.011, 0.110, 0.055, 0.078, 0.016),
    "RUNX1": (0.029, 0.241, 0.225, 0.523, 0.025),
    "SF3B1": (0.370, 0.085, 0.058, 0.060, 0.034),
    "SRSF2": (0.001, 0.059, 0.991, 0.455, 0.007),
    "U2AF1": (0.026, 0.440, 0.002, 0.023, 0.039),
    "BCOR": (0.017, 0.156, 0.061, 0.132, 0.011),
    "BCORL1": (0.008, 0.056, 0.007, 0.003, 0.024),
    "CEBPA": (0.008, 0.028, 0.008, 0.115, 0.006),
    "ETNK1": (0.007, 0.063, 0.047, 0.042, 0.019),
    "GATA2": (0.005, 0.049, 0.002, 0.014, 0.016),
    "GNB1": (0.012, 0.012, 0.032, 0.002, 0.020),
    "IDH1": (0.017, 0.017, 0.086, 0.059, 0.002),
    "NF1": (0.019, 0.074, 0.049, 0.036, 0.043),
    "PHF6": (0.016, 0.114, 0.018, 0.057, 0.002),
    "PPM1D": (0.019, 0.007, 0.006, 0.005, 0.069),
    "PRPF8": (0.008, 0.025, 0.002, 0.026, 0.006),
    "PTPN11": (0.005, 0.072, 0.013, 0.018, 0.020),
    "SETBP1": (0.003, 0.143, 0.055, 0.034, 0.018),
    "STAG2": (0.018, 0.103, 0.089, 0.601, 0.007),
    "WT1": (0.010, 0.051, 0.006, 0.008, 0.007),
    "TET2": (0.293, 0.190, 0.611, 0.456, 0.067),
    "ZRSR2": (0.058, 0.042, 0.032, 0.153, 0.002),
    "JAK2": (0.027, 0.024, 0.043, 0.011, 0.019),
    "CUX1": (0.022, 0.057, 0.128, 0.014, 0.007),
    "DDX41": (0.040, 0.008, 0.058, 0.002, 0.011),
    "del5q": (0.132, 0.039, 0.013, 0.011, 0.912),
    "del7_7q": (0.016, 0.193, 0.020, 0.017, 0.543),
    "del17_17p": (0.002, 0.007, 0.002, 0.002, 0.323),
    "del20q": (0.032, 0.109, 0.038, 0.026, 0.211),
    "plus8": (0.040, 0.097, 0.041, 0.185, 0.182),
    "complex": (0.015, 0.055, 0.008, 0.007, 0.909),
    "TP53multi": (0.001, 0.006, 0.002, 0.002, 0.899),
}
# Posterior-weighted IWG-PM moments per class: (means, standard deviations).
_CLIN = {
    "age": ((69.5, 68.7, 71.8, 71.9, 69.1), (12.8, 12.7, 10.1, 10.0, 11.7)),
    "hb": ((9.94, 9.58, 10.84, 9.52, 8.99), (2.0, 2.0, 2.18, 1.8, 1.67)),
    "log_plt": ((5.04, 4.48, 4.53, 4.56, 4.14), (0.86, 0.97, 0.79, 0.88, 0.9)),
    "log_anc": ((0.76, 0.53, 0.5, 0.38, 0.32), (0.74, 0.84, 0.87, 0.89, 0.89)),
    "log_wbc": ((1.47, 1.33, 1.38, 1.23, 1.24), (0.52, 0.6, 0.59, 0.61, 0.55)),
    "log_bm": ((0.95, 1.5, 1.26, 1.71, 1.84), (0.93, 0.92, 0.98, 0.91, 0.88)),
    "pb_pos": ((0.06, 0.21, 0.09, 0.25, 0.28), None),
    "log_pb": ((0.7, 0.95, 1.03, 1.02, 1.08), (0.87, 0.76, 0.88, 0.94, 0.78)),
    "log_mono": ((-0.97, -1.08, -0.62, -1.32, -1.33), (0.91, 1.13, 1.11, 1.12, 0.92)),
    "male": ((0.54, 0.66, 0.7, 0.76, 0.58), None),
}
_SPLICING = ("SF3B1", "SRSF2", "U2AF1", "ZRSR2")
_RARE_GENES = ("BCORL1", "ETNK1", "GNB1", "PRPF8", "PPM1D", "CUX1", "DDX41", "GATA2")
_MISSING_RATES = {"pb_blast": 0.19, "monocytes": 0.18, "wbc": 0.09, "anc": 0.06, "hb": 0.036,
                  "plt": 0.04, "bm_blast": 0.035, "age": 0.007, "ring_sideroblasts": 0.5}

# Log-hazard weights (death without AML, AML transformation). Genes not listed have no effect.
_DEATH_GENES = {"ASXL1": 0.30, "RUNX1": 0.35, "SRSF2": 0.25, "U2AF1": 0.30, "EZH2": 0.30,
                "STAG2": 0.25, "NRAS": 0.35, "MLL_PTD": 0.40, "FLT3": 0.50, "CBL": 0.25,
                "DNMT3A": 0.10, "ETV6": 0.30, "KRAS": 0.25, "IDH2": 0.20, "BCOR": 0.20}
_AML_GENES = {"RUNX1": 0.50, "NRAS": 0.60, "FLT3": 0.90, "NPM1": 0.80, "ASXL1": 0.30,
              "IDH2": 0.40, "ETV6": 0.40, "WT1": 0.50, "EZH2": 0.20, "KRAS": 0.40}
_CYTO_HR = {"Very Good": -0.35, "Good": 0.0, "Intermediate": 0.25, "Poor": 0.45, "Very Poor": 0.7}


def generate_mds_cohort(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """n generated MDS patients (rows) in the MDS schema: features, therapy flags and the os /
    lfs / amlt endpoints in months (see the module docstring for the model)."""
    if n < 1:
        raise ValueError(f"generate_mds_cohort: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    k = rng.choice(len(_CLASS_WEIGHTS), size=n, p=np.asarray(_CLASS_WEIGHTS) / sum(_CLASS_WEIGHTS))

    def bern(name):
        return (rng.random(n) < np.asarray(_CLASS_P[name])[k]).astype(float)

    flags = {name: bern(name) for name in _CLASS_P}
    # Splicing genes: keep the first hit in random order, drop the others with probability 0.9.
    spl = np.stack([flags[g] for g in _SPLICING], axis=1)
    for i in np.flatnonzero(spl.sum(1) > 1):
        hits = rng.permutation(np.flatnonzero(spl[i]))
        for j in hits[1:]:
            if rng.random() < 0.9:
                flags[_SPLICING[j]][i] = 0.0
    # Complex karyotype without any listed abnormality is implausible: give it del(5q).
    flags["del5q"] = np.where((flags["complex"] == 1) & (flags["del5q"] + flags["del7_7q"]
                                                       + flags["del17_17p"] == 0), 1.0, flags["del5q"])

    def normal(name, lo=-np.inf, hi=np.inf):
        mu, sd = (np.asarray(v)[k] for v in _CLIN[name])
        return np.clip(rng.normal(mu, sd), lo, hi)

    age = np.round(normal("age", 18, 100))
    sex = np.where(rng.random(n) < np.asarray(_CLIN["male"][0])[k], "M", "F")
    hb = np.round(normal("hb", 4, 16.5), 1)
    plt = np.round(np.exp(normal("log_plt", np.log(5), np.log(1500))))
    wbc_z = rng.standard_normal(n)
    mu_w, sd_w = (np.asarray(v)[k] for v in _CLIN["log_wbc"])
    wbc = np.round(np.clip(np.exp(mu_w + sd_w * wbc_z) - 0.1, 0.5, 60), 1)
    mu_a, sd_a = (np.asarray(v)[k] for v in _CLIN["log_anc"])
    anc_raw = np.exp(mu_a + sd_a * (0.8 * wbc_z + 0.6 * rng.standard_normal(n))) - 0.1
    anc = np.round(np.clip(anc_raw, 0.05, 0.9 * wbc), 2)
    monocytes = np.round(np.clip(np.exp(normal("log_mono")) - 0.05, 0.0, 0.5 * wbc), 2)
    bm_blast = np.round(np.clip(np.exp(normal("log_bm")) - 0.5, 0, 19.5), 1)
    pb_pos = rng.random(n) < np.asarray(_CLIN["pb_pos"][0])[k]
    pb_blast = np.where(pb_pos, np.round(np.clip(np.exp(normal("log_pb")), 1, 19), 0), 0.0)
    sf3b1 = flags["SF3B1"] == 1
    ring = np.where(sf3b1, np.round(rng.beta(2.5, 3.0, n) * 80 + 5),
                    np.where(rng.random(n) < 0.12, np.round(rng.uniform(1, 15, n)), 0.0))

    # TP53 details.
    tp53 = flags["TP53"] == 1
    p_multi = np.clip(np.asarray(_CLASS_P["TP53multi"])[k] / np.asarray(_CLASS_P["TP53"])[k], 0, 0.95)
    multi = tp53 & (rng.random(n) < p_multi)
    loh = multi & ((flags["del17_17p"] == 1) | (rng.random(n) < 0.5))
    n_mut = np.where(tp53, 1, 0) + np.where(multi & ~loh, 1, 0) + (multi & (rng.random(n) < 0.1))
    tp53_count = n_mut.astype(float)
    tp53_maxvaf = np.where(tp53, np.round(np.clip(rng.beta(2.0, 3.5, n) + 0.15 * multi, 0.02, 0.98), 3), 0.0)
    tp53_loh = loh.astype(float)

    cyto = _cyto_ipssr(flags, rng)

    # Therapy by indication.
    lo_blast = bm_blast < 5
    len_p = np.where((flags["del5q"] == 1) & lo_blast & (flags["complex"] == 0), 0.45, 0.02)
    lenalidomide = (rng.random(n) < len_p).astype(float)
    poor = np.isin(cyto, ["Poor", "Very Poor"])
    hma_p = np.where(bm_blast >= 10, 0.55, np.where((bm_blast >= 5) | poor, 0.3, 0.08))
    hma = (rng.random(n) < hma_p).astype(float)
    tx_p = np.where(age < 70, np.where((bm_blast >= 5) | poor | multi, 0.35, 0.05), 0.01)
    transplant = (rng.random(n) < tx_p).astype(float)

    # Hazards.
    blast_step = 0.35 * (bm_blast >= 5) + 0.45 * (bm_blast >= 10)
    age_hinge = 0.055 * np.maximum(age - 60, 0) + 0.0015 * np.maximum(age - 75, 0) ** 2
    hb_hinge = 0.22 * np.maximum(10 - hb, 0)
    plt_step = 0.35 * (plt < 50) + 0.15 * (plt < 100)
    sf3b1_good = sf3b1 & (flags["SRSF2"] + flags["RUNX1"] + flags["STAG2"] + flags["BCOR"] == 0)
    tp53_x_complex = multi & (flags["complex"] == 1)
    cyto_hr = np.array([_CYTO_HR[c] for c in cyto])
    genes_d = sum(w * flags[g] for g, w in _DEATH_GENES.items())
    genes_a = sum(w * flags[g] for g, w in _AML_GENES.items())
    lp_death = (age_hinge + hb_hinge + plt_step + blast_step + cyto_hr + genes_d
                + 0.15 * (sex == "M") + 0.25 * tp53 + 0.35 * multi + 1.0 * tp53_x_complex
                - 0.45 * sf3b1_good - 0.3 * transplant + 0.15 * (anc < 0.8)
                - 0.25 * ((flags["del5q"] == 1) & (flags["complex"] == 0)))
    lp_aml = (1.0 * (bm_blast >= 5) + 0.8 * (bm_blast >= 10) + 0.4 * (pb_blast >= 2) + genes_a
              + 0.6 * multi + 0.5 * tp53_x_complex + 0.5 * poor - 0.7 * sf3b1_good
              - 0.4 * transplant + 0.3 * (plt < 50))
    # Weibull times: T = scale * (E / exp(lp))^(1/shape), E ~ Exp(1).
    t_death = 420.0 * (rng.exponential(size=n) / np.exp(lp_death)) ** (1 / 1.15)
    t_aml = 650.0 * rng.exponential(size=n) / np.exp(lp_aml)
    t_after_aml = rng.exponential(7.0 / np.log(2), size=n)
    t_os = np.minimum(t_death, t_aml + t_after_aml)
    censor = np.minimum(rng.uniform(6, 144, n), rng.exponential(12 / 0.03, n))

    def endpoint(t_event, competing=None):
        t_end = t_event if competing is None else np.minimum(t_event, competing)
        event = t_event <= censor
        if competing is not None:
            event &= t_event <= competing
        return np.round(np.maximum(np.minimum(t_end, censor), 0.1), 2), event.astype(int)

    os_m, os_e = endpoint(t_os)
    lfs_m, lfs_e = endpoint(np.minimum(t_aml, t_death))
    amlt_m, amlt_e = endpoint(t_aml, competing=t_death)

    df = pd.DataFrame({
        "patient_id": [f"GEN-{seed}-{i:06d}" for i in range(n)],
        "age": age, "sex": sex, "hb": hb, "plt": plt, "anc": anc, "wbc": wbc,
        "bm_blast": bm_blast, "pb_blast": pb_blast, "monocytes": monocytes,
        "ring_sideroblasts": ring, "cyto_ipssr": cyto,
        "del5q": flags["del5q"], "del7_7q": flags["del7_7q"], "del17_17p": flags["del17_17p"],
        "del20q": flags["del20q"], "plus8": flags["plus8"], "complex": flags["complex"],
        "tp53_count": tp53_count, "tp53_maxvaf": tp53_maxvaf, "tp53_loh": tp53_loh,
    })
    for g in MDS_GENES:
        df[g] = flags[g]
    df["hma"], df["lenalidomide"], df["transplant"] = hma, lenalidomide, transplant
    df["os_months"], df["os_event"] = os_m, os_e
    df["lfs_months"], df["lfs_event"] = lfs_m, lfs_e
    df["amlt_months"], df["amlt_event"] = amlt_m, amlt_e
    _add_missing(df, rng)
    for f in MDS.features:  # fields the generator does not model (ECOG, therapy-related): missing
        if f.name not in df:
            df[f.name] = None if f.kind == "categorical" else np.nan
    return df[["patient_id"] + [f.name for f in MDS.features]
              + ["os_months", "os_event", "lfs_months", "lfs_event", "amlt_months", "amlt_event"]]


def _cyto_ipssr(flags: dict, rng: np.random.Generator) -> np.ndarray:
    """IPSS-R cytogenetic group from the modelled flags (Greenberg et al. 2012), with noise for
    the abnormalities the generator does not carry (-Y, del(11q), i(17q), 3q, other)."""
    n = len(flags["complex"])
    u = rng.random(n)
    n_abn = flags["del5q"] + flags["del7_7q"] + flags["del17_17p"] + flags["del20q"] + flags["plus8"]
    out = np.where(u < 0.06, "Very Good", np.where(u < 0.10, "Intermediate", "Good")).astype(object)
    out[(flags["del5q"] + flags["del20q"] > 0) & (n_abn == 1)] = "Good"
    out[(flags["plus8"] + flags["del17_17p"] > 0) | (n_abn >= 2)] = "Intermediate"
    out[(flags["del7_7q"] == 1)] = np.where(rng.random(int((flags["del7_7q"] == 1).sum())) < 0.5,
                                            "Poor", "Intermediate")
    cx = flags["complex"] == 1
    out[cx] = np.where(rng.random(int(cx.sum())) < 0.85, "Very Poor", "Poor")
    return out


def _add_missing(df: pd.DataFrame, rng: np.random.Generator) -> None:
    n = len(df)
    for col, rate in _MISSING_RATES.items():
        df.loc[rng.random(n) < rate, col] = np.nan
    cyto_cols = MDS.group("cytogenetic")
    df.loc[rng.random(n) < 0.046, cyto_cols] = np.nan
    gen_cols = MDS.group("genomic")
    df.loc[rng.random(n) < 0.02, gen_cols] = np.nan
    df.loc[rng.random(n) < 0.06, list(_RARE_GENES)] = np.nan


# --- Sickle cell disease -----------------------------------------------------------------------
# Genotype shares (high-income registries; docs/scd.md): HbSS ~2/3, HbSC ~1/4, the two
# HbS/beta-thalassaemias the rest.
_SCD_GENOTYPE_P = {"HbSS": 0.66, "HbSC": 0.25, "HbS-beta0-thal": 0.04, "HbS-beta+-thal": 0.05}
# Steady-state laboratory values per genotype, off hydroxyurea and transfusion:
# (Hb g/dL mean, HbF % median, reticulocytes % median, LDH U/L median, bilirubin mg/dL median,
# WBC 10^9/L median). HbS/beta0 is clinically HbSS-like, HbS/beta+ close to HbSC.
_SCD_LABS = {
    "HbSS": (7.6, 6.0, 10.0, 450.0, 3.0, 10.5),
    "HbSC": (11.0, 2.0, 3.5, 260.0, 1.4, 7.5),
    "HbS-beta0-thal": (7.9, 7.0, 8.5, 400.0, 2.6, 10.0),
    "HbS-beta+-thal": (10.8, 4.5, 4.0, 270.0, 1.5, 8.0),
}
# Per genotype: (painful-crisis rate per year, stroke probability by age 20, ACS incidence per
# 100 patient-years, log hazard ratio of death against HbSS).
_SCD_RATES = {
    "HbSS": (0.8, 0.11, 12.8, 0.0),
    "HbSC": (0.4, 0.02, 5.2, -0.8),
    "HbS-beta0-thal": (1.0, 0.08, 9.4, 0.0),
    "HbS-beta+-thal": (0.4, 0.02, 3.9, -0.7),
}
_SCD_MISSING = {"hbf": 0.10, "retic": 0.15, "ldh": 0.15, "bilirubin": 0.10, "wbc": 0.05, "hb": 0.03,
                "voc_per_year": 0.08, "acs_history": 0.05, "stroke_history": 0.03, "genotype": 0.0,
                "hydroxyurea": 0.02, "chronic_transfusion": 0.02}
# Gompertz mortality in attained age a (years): h(a) = h0 exp(b a) exp(lp); with lp = 0 (HbSS,
# female, HbF 6%, no complication) the median age at death would be 58 years; the complications
# the cohort carries bring HbSS to a median of ~53 (HbSC ~68), docs/scd.md.
_SCD_GOMPERTZ_B = 0.05
_SCD_GOMPERTZ_H0 = np.log(2) * _SCD_GOMPERTZ_B / (np.exp(_SCD_GOMPERTZ_B * 58.0) - 1.0)


def generate_scd_cohort(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """n generated sickle cell disease patients (rows) in the SCD schema, with the os and sev
    endpoints in months from the baseline visit.

    Model (seeded; one `numpy.random.Generator`; figures and sources in docs/scd.md):

    1. Genotype (HbSS 66%, HbSC 25%, HbS/beta0 4%, HbS/beta+ 5%), sex 1:1, age at baseline:
       40% children (1-18 years, uniform), 60% adults (18 + Gamma(2, 9), at most 80).
    2. Therapy by indication: hydroxyurea for 55% of HbSS / HbS-beta0 patients (15% of the
       milder genotypes); a chronic transfusion programme for 8% of them, 70% after a stroke.
    3. Laboratory values at steady state around the genotype's figures (`_SCD_LABS`). One
       latent haemolysis score moves Hb down and reticulocytes, LDH and bilirubin up together;
       HbF is log-normal around the genotype's median, higher in children, and hydroxyurea
       about doubles it (+ Hb 0.6 g/dL, reticulocytes and WBC down); each % of HbF raises Hb
       a little. Transfusion raises Hb and lowers HbF, reticulocytes and haemolysis markers.
    4. History: painful crises per year ~ Gamma-Poisson around the genotype's rate, higher in
       adults and with higher Hb, lower with HbF (-4% per HbF %) and hydroxyurea (-44%);
       acute chest syndrome ever (a quarter of the episode incidence, up to age 30) and stroke
       ever grow with age at the genotype's incidence.
    5. Transcranial Doppler velocity only in HbSS / HbS-beta0 children 2-16 years (70%
       screened): ~Normal(155, 35) cm/s at Hb 8 g/dL and age 8, higher with lower Hb and in
       younger children, lower on hydroxyurea or transfusion; about 6% at 200 cm/s or above
       (abnormal).
    6. Death: Gompertz in attained age (median age at death ~53 years in HbSS, ~68 in HbSC,
       measured with left-truncated Kaplan-Meier on 20,000 patients) with a log-risk for
       genotype (HbSC -0.8), male sex (+0.15), HbF (-0.04 per % above the genotype's median),
       hydroxyurea (-0.4), ACS history (+0.5), stroke history (+0.5), WBC > 15 (+0.4), crises
       (+0.08 per crisis/year, at most 10), haemolysis (+0.25 per SD). First severe event: the
       earliest of death, an overt stroke (hazard from the stroke incidence, x8 when TCD >= 200
       cm/s and off transfusion, x3 after a previous stroke, halved on hydroxyurea, x0.2 on
       transfusion) and acute chest syndrome needing intensive care (15% of the ACS incidence,
       x1.6 after ACS, -50% on hydroxyurea, +0.08 per crisis/year, a hinge in Hb above 10 g/dL
       in HbSS).
    7. Censoring: administrative (uniform 12-180 months) and loss to follow-up (4% a year).
    8. Missing completely at random like a registry export (`_SCD_MISSING`); TCD missing
       where it is not done (adults, milder genotypes, unscreened children).
    """
    if n < 1:
        raise ValueError(f"generate_scd_cohort: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    gts = list(_SCD_GENOTYPE_P)
    genotype = np.asarray(gts, dtype=object)[
        rng.choice(len(gts), size=n, p=np.asarray(list(_SCD_GENOTYPE_P.values())))]
    severe = np.isin(genotype, ["HbSS", "HbS-beta0-thal"])
    ss = genotype == "HbSS"
    child = rng.random(n) < 0.40
    age = np.where(child, rng.uniform(1, 18, n), 18 + np.minimum(rng.gamma(2.0, 9.0, n), 62.0))
    age = np.round(age, 1)
    male = rng.random(n) < 0.5
    sex = np.where(male, "M", "F")

    def per_gt(table, j):
        return np.array([table[g][j] for g in genotype], dtype=float)

    # 4 (first the history that drives therapy): stroke ever, from the genotype's risk by age 20.
    p20 = per_gt(_SCD_RATES, 1)
    stroke_rate = -np.log(1 - p20) / 20.0  # per year, constant in age (a simplification)
    stroke_hist = rng.random(n) < 1 - np.exp(-stroke_rate * np.maximum(age - 1, 0))
    # 2. therapy by indication
    hu = rng.random(n) < np.where(severe, 0.55, 0.15)
    tx = rng.random(n) < np.where(stroke_hist, 0.70, np.where(severe, 0.08, 0.02))
    # 3. laboratory values
    hb_mu, hbf_med, ret_med, ldh_med, bili_med, wbc_med = (per_gt(_SCD_LABS, j) for j in range(6))
    hbf = hbf_med * np.exp(rng.normal(0, 0.55, n)) * np.where(child, 1.3, 1.0)
    hbf = hbf * np.where(hu, 2.0, 1.0) * np.where(tx, 0.6, 1.0)
    hbf = np.clip(hbf, 0.3, 45)
    haem = rng.standard_normal(n) - 0.4 * tx  # latent haemolysis score (SD 1)
    hb = hb_mu + 0.04 * (hbf - hbf_med) + 0.6 * hu + 1.3 * tx - 0.5 * haem + rng.normal(0, 0.7, n)
    hb = np.round(np.clip(hb, 4.0, 15.5), 1)
    retic = ret_med * np.exp(0.3 * haem + rng.normal(0, 0.25, n)) * np.where(hu, 0.8, 1.0) * np.where(tx, 0.7, 1.0)
    retic = np.round(np.clip(retic, 0.5, 40), 1)
    ldh = np.round(np.clip(ldh_med * np.exp(0.3 * haem + rng.normal(0, 0.2, n)), 120, 3000))
    bili = np.round(np.clip(bili_med * np.exp(0.35 * haem + rng.normal(0, 0.3, n)), 0.2, 20), 1)
    wbc = wbc_med * np.exp(rng.normal(0, 0.25, n)) - 2.0 * hu
    wbc = np.round(np.clip(wbc, 2.0, 40), 1)
    # 4. crises and acute chest syndrome
    voc_rate = (per_gt(_SCD_RATES, 0) * np.where(age >= 18, 1.4, 0.8) * np.exp(0.12 * (hb - hb_mu))
                * np.exp(-0.04 * (hbf - hbf_med)) * np.where(hu, 0.56, 1.0))
    voc = rng.poisson(voc_rate * rng.gamma(1.5, 1 / 1.5, n)).astype(float)
    acs_inc = per_gt(_SCD_RATES, 2) / 100.0
    # a first episode is rarer than the episode incidence (episodes recur in the same patients)
    acs_hist = rng.random(n) < 1 - np.exp(-0.25 * acs_inc * np.minimum(age, 30) * np.where(hu, 0.7, 1.0))
    # 5. transcranial Doppler (STOP screening: HbSS / HbS-beta0 children 2-16 years)
    screened = severe & (age >= 2) & (age <= 16) & (rng.random(n) < 0.70)
    tcd = (155 + 10.0 * (8.0 - hb) - 2.0 * (age - 8) - 15 * hu - 25 * tx + rng.normal(0, 35, n))
    tcd = np.where(screened, np.round(np.clip(tcd, 40, 320)), np.nan)
    abnormal_tcd = np.nan_to_num(tcd) >= 200
    # 6. outcomes
    lp_death = (per_gt(_SCD_RATES, 3) + 0.15 * male - 0.04 * (hbf - hbf_med) - 0.4 * hu + 0.5 * acs_hist
                + 0.5 * stroke_hist + 0.4 * (wbc > 15) + 0.08 * np.minimum(voc, 10) + 0.25 * haem)
    b, h0 = _SCD_GOMPERTZ_B, _SCD_GOMPERTZ_H0
    e = rng.exponential(size=n)
    years = np.log1p(e * b / (h0 * np.exp(lp_death) * np.exp(b * age))) / b  # Gompertz from `age`
    t_death = 12.0 * years
    stroke_h = (stroke_rate * np.where(abnormal_tcd & ~tx, 8.0, 1.0) * np.where(stroke_hist, 3.0, 1.0)
                * np.where(hu, 0.5, 1.0) * np.where(tx, 0.2, 1.0) * np.where(age > 30, 1.5, 1.0))
    t_stroke = 12.0 * rng.exponential(1.0 / stroke_h)
    lp_acs = (0.47 * acs_hist - 0.69 * hu + 0.08 * np.minimum(voc, 10)
              + 0.35 * ss * np.maximum(hb - 10.0, 0))
    acs_icu_h = 0.15 * acs_inc * np.exp(lp_acs)
    t_acs = 12.0 * rng.exponential(1.0 / acs_icu_h)
    t_sev = np.minimum(t_death, np.minimum(t_stroke, t_acs))
    censor = np.minimum(rng.uniform(12, 180, n), rng.exponential(12 / 0.04, n))

    def endpoint(t_event):
        return (np.round(np.maximum(np.minimum(t_event, censor), 0.1), 2),
                (t_event <= censor).astype(int))

    os_m, os_e = endpoint(t_death)
    sev_m, sev_e = endpoint(t_sev)
    df = pd.DataFrame({
        "patient_id": [f"SCD-{seed}-{i:06d}" for i in range(n)],
        "age": age, "sex": sex, "genotype": genotype, "hbf": np.round(hbf, 1), "hb": hb,
        "retic": retic, "ldh": ldh, "bilirubin": bili, "wbc": wbc, "voc_per_year": voc,
        "acs_history": acs_hist.astype(float), "stroke_history": stroke_hist.astype(float),
        "tcd_velocity": tcd, "hydroxyurea": hu.astype(float), "chronic_transfusion": tx.astype(float),
        "os_months": os_m, "os_event": os_e, "sev_months": sev_m, "sev_event": sev_e,
    })
    for col, rate in _SCD_MISSING.items():
        if rate:
            df.loc[rng.random(n) < rate, col] = None if col == "genotype" else np.nan
    return df[["patient_id"] + SCD.feature_names + ["os_months", "os_event", "sev_months", "sev_event"]]


def split_nodes(df: pd.DataFrame, fractions=(0.6, 0.3, 0.1), seed: int = 0,
                stratify: str | None = "os_event") -> list[pd.DataFrame]:
    """Split rows into len(fractions) disjoint node tables (sizes proportional to `fractions`,
    which must sum to 1), stratified by `stratify` when that column exists."""
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or len(fr) < 1 or (fr <= 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise ValueError(f"split_nodes: fractions must be positive and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fr]
    if stratify and stratify in df:
        strata = [np.flatnonzero(df[stratify].fillna(-1).to_numpy() == v)
                  for v in sorted(df[stratify].fillna(-1).unique())]
    else:
        strata = [np.arange(len(df))]
    for idx in strata:
        idx = rng.permutation(idx)
        cuts = np.round(np.cumsum(fr)[:-1] * len(idx)).astype(int)
        for j, chunk in enumerate(np.split(idx, cuts)):
            parts[j].extend(chunk.tolist())
    return [df.iloc[sorted(p)].reset_index(drop=True) for p in parts]
