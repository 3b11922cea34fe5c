"""The public IWG-PM MDS cohort (Bernard et al., NEJM Evidence 2022) as an MDS-schema table.

Reads a folder with the published layout: ``df_clinical.tsv`` (one row per patient, times in
years), ``df_mut.tsv`` (binary gene matrix), ``df_cna.tsv`` (binary cytogenetic / copy-number
matrix) and ``maf.tsv`` (one row per mutation, with VAF), joined on ``ID``. Times become months
(x 12). The published scores are kept as extra columns ``ipssr``, ``ipssr_score``,
``ipssra_score``, ``ipssm``, ``ipssm_score`` (and ``who_2016``, ``mds_type``) for comparison.
This is the quick research path; the ETL builds FHIR resources from the same files separately.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import MDS, MDS_GENES

_CLINICAL = {"AGE": "age", "HB": "hb", "PLT": "plt", "ANC": "anc", "WBC": "wbc",
             "BM_BLAST": "bm_blast", "PB_BLAST": "pb_blast", "MONOCYTES": "monocytes",
             "RINGED_SIDEROBLASTS": "ring_sideroblasts"}
_CYTO_IPSSR = {"Very-Good": "Very Good", "Good": "Good", "Int": "Intermediate", "Poor": "Poor",
               "Very-Poor": "Very Poor"}
# Schema flag <- any of these df_cna columns.
_CNA = {"del5q": ("del5q", "del5"), "del7_7q": ("del7", "del7q"), "del17_17p": ("del17", "del17p"),
        "del20q": ("del20q", "del20"), "plus8": ("plus8",)}
_ENDPOINTS = {"os": "OS", "lfs": "LFS", "amlt": "AMLt"}
_SCORES = {"IPSSR": "ipssr", "IPSSR_SCORE": "ipssr_score", "IPSSRA": "ipssra",
           "IPSSRA_SCORE": "ipssra_score", "IPSSM": "ipssm", "IPSSM_SCORE": "ipssm_score",
           "WHO_2016": "who_2016", "MDS_TYPE": "mds_type"}


def _read(folder: Path, name: str, required: tuple[str, ...]) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"IWG-PM: {path} not found")
    df = pd.read_csv(path, sep="\t")
    missing = [c for c in required if c not in df]
    if missing:
        raise ValueError(f"IWG-PM: {path}: missing column(s) {', '.join(missing)}")
    return df


def load_iwgpm(folder) -> pd.DataFrame:
    """One row per patient: MDS-schema features, os/lfs/amlt endpoints (months) and the
    published IPSS-R / IPSS-M columns; rows without OS keep NaN endpoints."""
    folder = Path(folder)
    clin = _read(folder, "df_clinical.tsv", ("ID", "SEX", "CYTO_IPSSR", "complex", "chr17",
                                             "OS_YEARS", "OS_STATUS", *_CLINICAL))
    mut = _read(folder, "df_mut.tsv", ("ID", *MDS_GENES))
    cna = _read(folder, "df_cna.tsv", ("ID", *{c for cols in _CNA.values() for c in cols}))
    maf = _read(folder, "maf.tsv", ("ID", "GENE", "VAF"))
    if clin.ID.duplicated().any():
        dup = clin.ID[clin.ID.duplicated()].iloc[0]
        raise ValueError(f"IWG-PM: df_clinical.tsv: duplicated ID {dup!r}")

    out = pd.DataFrame({"patient_id": clin.ID.astype(str)})
    for src, dst in _CLINICAL.items():
        out[dst] = pd.to_numeric(clin[src], errors="coerce")
    out["sex"] = clin.SEX.where(clin.SEX.isin(["F", "M"]))
    bad = set(clin.CYTO_IPSSR.dropna()) - set(_CYTO_IPSSR)
    if bad:
        raise ValueError(f"IWG-PM: df_clinical.tsv column CYTO_IPSSR: unknown value(s) {sorted(bad)}")
    out["cyto_ipssr"] = clin.CYTO_IPSSR.map(_CYTO_IPSSR)

    cna = cna.set_index("ID").reindex(out.patient_id)
    no_karyotype = (clin.CYTO_IPSSR.isna() & clin.get("CYTOGENETICS", pd.Series(np.nan, index=clin.index)).isna()).to_numpy()
    for flag, cols in _CNA.items():
        v = (cna[list(cols)].fillna(0).to_numpy() > 0).any(axis=1).astype(float)
        out[flag] = np.where(no_karyotype, np.nan, v)
    out["complex"] = np.where(no_karyotype, np.nan, (clin.complex == "complex").astype(float))

    tp = maf[maf.GENE == "TP53"].groupby("ID").VAF.agg(["count", "max"]).reindex(out.patient_id)
    mut = mut.set_index("ID").reindex(out.patient_id)
    has_ngs = mut[list(MDS_GENES)].notna().any(axis=1).to_numpy()
    out["tp53_count"] = np.where(has_ngs, tp["count"].fillna(0).to_numpy(), np.nan)
    out["tp53_maxvaf"] = np.where(has_ngs, tp["max"].fillna(0).to_numpy(), np.nan)
    out["tp53_loh"] = clin.chr17.isin(["del", "cnloh"]).astype(float).to_numpy()
    for g in MDS_GENES:
        out[g] = mut[g].to_numpy(dtype=float)

    out["hma"] = pd.to_numeric(clin.get("hma"), errors="coerce")
    out["lenalidomide"] = pd.to_numeric(clin.get("lenalidomid"), errors="coerce")
    out["transplant"] = pd.to_numeric(clin.get("transplant"), errors="coerce")
    for ep, src in _ENDPOINTS.items():
        if f"{src}_YEARS" in clin:
            out[f"{ep}_months"] = pd.to_numeric(clin[f"{src}_YEARS"], errors="coerce") * 12.0
            out[f"{ep}_event"] = pd.to_numeric(clin[f"{src}_STATUS"], errors="coerce")
    for src, dst in _SCORES.items():
        if src in clin:
            out[dst] = clin[src]
    for f in MDS.features:
        if f.name not in out:
            out[f.name] = np.nan
    extra = [c for c in out if c not in MDS.feature_names and c != "patient_id"]
    return out[["patient_id"] + MDS.feature_names + extra].reset_index(drop=True)
