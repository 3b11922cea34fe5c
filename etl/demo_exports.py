"""Teaching exports: a table in schema names and units (a generated cohort, e.g.
``fl_engine.cohort.generate_scd_cohort``) written back out the way a hospital's registry export
looks, with the mapping file that reads it. The demo hospitals and the ETL tests feed these to
``fedhaem-node etl`` so the whole path (export -> FHIR -> ML-ready table) runs on them.

The ETL sits below the engine: the caller passes the table in; nothing here generates patients.

    from fl_engine.cohort import generate_scd_cohort
    from etl.demo_exports import write_scd_export
    csv, mapping = write_scd_export(generate_scd_cohort(300, seed=1), "/data/export")
    # fedhaem-node etl --use-case scd --source <csv> --mapping <mapping> --out /data/etl/scd-1
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

DAYS_PER_MONTH = 365.25 / 12
BILIRUBIN_UMOL_PER_MG_DL = 17.1

# Genotype as a sickle-cell clinic's registry writes it, and back (the mapping's closed codes).
SCD_GENOTYPE_CODES = {"HbSS": "SS", "HbSC": "SC", "HbS-beta0-thal": "S/β0", "HbS-beta+-thal": "S/β+"}
_YES_NO = {1.0: "oui", 0.0: "non"}

# export column <- schema field, in export order: a French-speaking centre's registry (units in
# the header where the registry writes them).
SCD_COLUMNS = {
    "patient_id": "N° patient",
    "age": "Age inclusion (ans)",
    "sex": "Sexe",
    "genotype": "Génotype",
    "hbf": "HbF (%)",
    "hb": "Hb (g/L)",
    "retic": "Réticulocytes (%)",
    "ldh": "LDH (UI/L)",
    "bilirubin": "Bilirubine totale (µmol/L)",
    "wbc": "Leucocytes (G/L)",
    "voc_per_year": "CVO/an",
    "acs_history": "ATCD STA",
    "stroke_history": "ATCD AVC",
    "tcd_velocity": "DTC Vmax (cm/s)",
    "hydroxyurea": "Hydroxyurée",
    "chronic_transfusion": "Programme transfusionnel",
    "os_months": "Suivi (jours)",
    "os_event": "Statut vital",
    "sev_months": "Délai 1er événement grave (jours)",
    "sev_event": "Evénement grave",
}


def scd_hospital_export(table: pd.DataFrame) -> pd.DataFrame:
    """An SCD table (schema names and units) as a registry export: French column names, Hb in
    g/L, bilirubin in µmol/L, times in days, genotype SS / SC / S/β0 / S/β+, sex H / F, yes/no
    as oui / non, vital status décédé / vivant. Missing values are empty cells."""
    missing = [c for c in SCD_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"scd_hospital_export: the table has no column(s) {', '.join(missing)}")
    t = table

    def num(col, factor=1.0, digits=1):
        return pd.to_numeric(t[col], errors="coerce").mul(factor).round(digits)

    def yes_no(col):
        return t[col].map(_YES_NO)

    out = pd.DataFrame({
        SCD_COLUMNS["patient_id"]: t["patient_id"].astype(str),
        SCD_COLUMNS["age"]: num("age"),
        SCD_COLUMNS["sex"]: t["sex"].map({"M": "H", "F": "F"}),
        SCD_COLUMNS["genotype"]: t["genotype"].map(SCD_GENOTYPE_CODES),
        SCD_COLUMNS["hbf"]: num("hbf"),
        SCD_COLUMNS["hb"]: num("hb", 10.0, 0),
        SCD_COLUMNS["retic"]: num("retic"),
        SCD_COLUMNS["ldh"]: num("ldh", 1.0, 0),
        SCD_COLUMNS["bilirubin"]: num("bilirubin", BILIRUBIN_UMOL_PER_MG_DL, 1),
        SCD_COLUMNS["wbc"]: num("wbc"),
        SCD_COLUMNS["voc_per_year"]: num("voc_per_year", 1.0, 0),
        SCD_COLUMNS["acs_history"]: yes_no("acs_history"),
        SCD_COLUMNS["stroke_history"]: yes_no("stroke_history"),
        SCD_COLUMNS["tcd_velocity"]: num("tcd_velocity", 1.0, 0),
        SCD_COLUMNS["hydroxyurea"]: yes_no("hydroxyurea"),
        SCD_COLUMNS["chronic_transfusion"]: yes_no("chronic_transfusion"),
        SCD_COLUMNS["os_months"]: num("os_months", DAYS_PER_MONTH, 0),
        SCD_COLUMNS["os_event"]: t["os_event"].map({1: "décédé", 0: "vivant", 1.0: "décédé", 0.0: "vivant"}),
        SCD_COLUMNS["sev_months"]: num("sev_months", DAYS_PER_MONTH, 0),
        SCD_COLUMNS["sev_event"]: t["sev_event"].map({1: "oui", 0: "non", 1.0: "oui", 0.0: "non"}),
    })
    for c in out.columns:  # whole numbers without ".0", as a registry writes them
        col = out[c]
        if col.dtype.kind == "f" and np.all(np.isnan(col) | (col == np.round(col))) and (
                c in (SCD_COLUMNS[k] for k in ("hb", "ldh", "voc_per_year", "tcd_velocity",
                                              "os_months", "sev_months"))):
            out[c] = col.astype("Int64")
    return out


def scd_mapping() -> dict:
    """The mapping file (docs/etl-mapping.md) that reads ``scd_hospital_export``'s CSV."""
    c = SCD_COLUMNS
    yes_no = {"oui": 1, "non": 0}
    return {
        "use_case": "SCD",
        "delimiter": ";",
        "fields": {
            "patient_id": c["patient_id"],
            "age": {"column": c["age"], "unit": "years"},
            "sex": {"column": c["sex"], "codes": {"H": "M", "F": "F"}},
            "genotype": {"column": c["genotype"], "codes": {v: k for k, v in SCD_GENOTYPE_CODES.items()}},
            "hbf": {"column": c["hbf"], "unit": "%"},
            "hb": {"column": c["hb"], "unit": "g/L"},
            "retic": {"column": c["retic"], "unit": "%"},
            "ldh": {"column": c["ldh"], "unit": "U/L"},
            "bilirubin": {"column": c["bilirubin"], "unit": "umol/L"},
            "wbc": c["wbc"],
            "voc_per_year": {"column": c["voc_per_year"], "unit": "/a"},
            "acs_history": {"column": c["acs_history"], "codes": yes_no},
            "stroke_history": {"column": c["stroke_history"], "codes": yes_no},
            "tcd_velocity": {"column": c["tcd_velocity"], "unit": "cm/s"},
            "hydroxyurea": {"column": c["hydroxyurea"], "codes": yes_no},
            "chronic_transfusion": {"column": c["chronic_transfusion"], "codes": yes_no},
            "os_months": {"column": c["os_months"], "unit": "d"},
            "os_event": {"column": c["os_event"], "codes": {"décédé": 1, "vivant": 0}},
            "sev_months": {"column": c["sev_months"], "unit": "d"},
            "sev_event": {"column": c["sev_event"], "codes": yes_no},
        },
    }


def write_scd_export(table: pd.DataFrame, out_dir: str | Path, name: str = "scd_registry") -> tuple[Path, Path]:
    """Write ``<name>.csv`` (semicolon-separated, UTF-8) and ``<name>-mapping.yaml`` into
    out_dir; returns (csv path, mapping path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, map_path = out / f"{name}.csv", out / f"{name}-mapping.yaml"
    scd_hospital_export(table).to_csv(csv_path, sep=";", index=False, encoding="utf-8")
    map_path.write_text("# Reads " + csv_path.name + " (etl/demo_exports.py); docs/etl-mapping.md\n"
                        + yaml.safe_dump(scd_mapping(), allow_unicode=True, sort_keys=False),
                        encoding="utf-8")
    return csv_path, map_path
