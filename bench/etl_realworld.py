"""The ETL on hostile but realistic exports built from the IWG-PM cohort (../shared/data).

The clean import (IWG-PM layout, its built-in mapping) gives the reference table. Each hostile
export holds the same patients as a hospital would send them: sex coded 0/1, haemoglobin in
g/dL for most rows and g/L for some (no unit anywhere), platelets per microlitre, times in days
and years, words for yes/no, IPSS-R groups abbreviated, SF3B1 split into two columns, genes
never tested dropped (declared not_tested), columns that are no field (MRD_status ignored,
the study arm carried as extra), one hyperleukocytic value above the schema's maximum. The
export goes through `fedhaem-node etl` with a mapping; patients kept must equal the clean
import's. A second export is the same hospital with a small gene panel (the IPSS-M residual
genes declared not tested as well).

Score coverage (fl_engine.scores.conventional.coverage_report): per conventional score, the
patients it was computable on ("n of N") for the clean import and each export, the reasons
the others were not, and the IPSS-M scenario spread (worst - best score).

    .venv/bin/python bench/etl_realworld.py [--json] [--g-per-l-share 0.3] [--seed 0]

Prints measured numbers only. Exit 1 when the kept patients differ from the clean import's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.pipeline import run_etl  # noqa: E402
from fl_engine.scores.conventional import coverage_report  # noqa: E402
from fl_engine.scores.mds import IPSSM_RESIDUAL_GENES  # noqa: E402

IWGPM = ROOT.parent / "shared" / "data" / "mds_iwgpm"
NOT_TESTED = ["DDX41", "CUX1", "ZRSR2"]  # genes this hospital's panel does not cover
SPLIT_GENE = "SF3B1"
CYTO = {"Very Good": "VG", "Good": "G", "Intermediate": "I", "Poor": "P", "Very Poor": "VP"}


def hostile_export(clean: pd.DataFrame, rng: np.random.Generator, g_per_l_share: float,
                   not_tested: list[str] = NOT_TESTED) -> tuple[pd.DataFrame, str, dict]:
    """(export, mapping YAML, what was done) from the clean table; `not_tested`: the genes the
    hospital's panel lacks (dropped from the export, declared in the mapping)."""
    n = len(clean)
    out = pd.DataFrame({"Pat-Nr": clean.patient_id})
    done: dict = {}
    for c in clean.columns:
        if c == "patient_id" or c in not_tested or c == SPLIT_GENE:
            continue
        out[c] = clean[c]
    out["Sex"] = clean.sex.map({"F": "0", "M": "1"})
    out = out.drop(columns=["sex"])
    hb = clean.hb.map(lambda v: "" if pd.isna(v) else f"{v:.10g}").astype(object)
    gl = (rng.random(n) < g_per_l_share) & clean.hb.notna().to_numpy()
    hb[gl] = clean.hb[gl].map(lambda v: f"{v * 10:.10g}")
    out["Hb"] = hb
    out = out.drop(columns=["hb"])
    done["hb_rows_in_g_per_l"] = int(gl.sum())
    out["Thrombos"] = clean.plt * 1000
    out = out.drop(columns=["plt"])
    for b in ("hma", "lenalidomide", "transplant"):
        out[b] = clean[b].map({1.0: "ja", 0.0: "nein"})
    out["cyto_ipssr"] = clean.cyto_ipssr.map(CYTO)
    mut = clean[SPLIT_GENE]
    first = rng.random(n) < 0.7
    out[f"{SPLIT_GENE}_K700E"] = np.where(mut.isna(), "", np.where((mut == 1) & first, "mut", "wt"))
    out[f"{SPLIT_GENE}_other"] = np.where(mut.isna(), "", np.where((mut == 1) & ~first, "mut", "wt"))
    out["OS (days)"] = clean.os_months * 30.4375
    out["OS status"] = clean.os_event.map({1.0: "dead", 0.0: "alive"})
    out["AMLt (years)"] = clean.amlt_months / 12
    out = out.drop(columns=["os_months", "os_event", "amlt_months"])
    out["MRD_status"] = rng.choice(["positive", "negative", ""], n)
    out["Study arm"] = rng.choice(["A", "B", "off study"], n)
    extreme = int(np.flatnonzero(clean.wbc.notna().to_numpy())[0])
    out = out.astype({"wbc": object})
    out.loc[extreme, "wbc"] = 532.7
    done["extreme_wbc_row"] = extreme
    drop_cols = [c for c in ("monocytes",)]
    out = out.drop(columns=drop_cols)
    done["columns_dropped"] = drop_cols + list(not_tested)
    mapping = "\n".join([
        "use_case: MDS",
        "fields:",
        "  patient_id: Pat-Nr",
        '  sex: {column: Sex, codes: {"0": F, "1": M}}',
        "  hb: {column: Hb, unit: detect}",
        "  plt: {column: Thrombos, unit: /uL}",
        "  cyto_ipssr: {column: cyto_ipssr, codes: {" + ", ".join(f"{v}: {json.dumps(k)}" for k, v in CYTO.items()) + "}}",
        f"  {SPLIT_GENE}: {{any_of: [{SPLIT_GENE}_K700E, {SPLIT_GENE}_other]}}",
        *[f"  {g}: {{constant: not_tested}}" for g in not_tested],
        "  os_event: {column: OS status, codes: {dead: 1, alive: 0}}",
        "ignore: [MRD_status]",
        "extra: {protocol: Study arm}",
    ]) + "\n"
    return out, mapping, done


def score_coverage(table: pd.DataFrame) -> dict:
    """Per MDS score: "n of N" computable, the fraction, the main reasons for the others, and
    for IPSS-M the scenario spread (worst - best)."""
    out = {}
    for name, c in coverage_report(table, "MDS").items():
        out[name] = {"computable": f"{c['n']} of {c['of']}", "fraction": round(c["fraction"], 4),
                     "sufficient": c["sufficient"], "reasons": c["reasons"]}
        if "spread" in c:
            out[name]["spread"] = c["spread"]
    return out


def compare(clean: pd.DataFrame, got: pd.DataFrame) -> dict[str, int]:
    """Per column, the cells that differ (missing vs value, or |a - b| > 1e-6 relative)."""
    a = clean.set_index("patient_id")
    b = got.set_index("patient_id").reindex(a.index)
    changed = {}
    for c in a.columns:
        if c not in b.columns:
            changed[c] = int(a[c].notna().sum())
            continue
        x, y = a[c], b[c]
        if x.dtype == object or y.dtype == object:
            diff = (x.isna() != y.isna()) | (x.notna() & y.notna() & (x.astype(str) != y.astype(str)))
        else:
            xf, yf = x.astype(float), y.astype(float)
            diff = (xf.isna() != yf.isna()) | ((xf - yf).abs() > 1e-6 * np.maximum(1, xf.abs()))
        if int(diff.sum()):
            changed[c] = int(diff.sum())
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--g-per-l-share", type=float, default=0.3)
    args = p.parse_args(argv)
    if not (IWGPM / "df_clinical.tsv").exists():
        print(f"IWG-PM cohort not found at {IWGPM} (needs ../shared/data)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        clean = run_etl("mds", [IWGPM], tmp / "clean")
        t_clean = time.perf_counter() - t0
        exp, mapping, done = hostile_export(clean.table, rng, args.g_per_l_share)
        exp.to_csv(tmp / "export.csv", sep=";", index=False, encoding="cp1252")
        (tmp / "mapping.yaml").write_text(mapping, encoding="utf-8")
        t0 = time.perf_counter()
        hostile = run_etl("mds", [tmp / "export.csv"], tmp / "hostile", mapping=tmp / "mapping.yaml")
        t_hostile = time.perf_counter() - t0
        rep = hostile.report
        small_panel = sorted(set(NOT_TESTED) | set(IPSSM_RESIDUAL_GENES))
        exp2, mapping2, _ = hostile_export(clean.table, np.random.default_rng(args.seed), args.g_per_l_share,
                                           small_panel)
        exp2.to_csv(tmp / "export-small-panel.csv", sep=";", index=False, encoding="cp1252")
        (tmp / "mapping-small-panel.yaml").write_text(mapping2, encoding="utf-8")
        small = run_etl("mds", [tmp / "export-small-panel.csv"], tmp / "small",
                        mapping=tmp / "mapping-small-panel.yaml")
        changed = compare(clean.table, hostile.table)
        expected = set(done["columns_dropped"]) | {"wbc"}
        result = {
            "cohort": "IWG-PM (Bernard et al., NEJM Evidence 2022)",
            "clean_patients": len(clean.table),
            "clean_rejected": clean.report["summary"]["rejected_patients"],
            "hostile_patients": len(hostile.table),
            "hostile_rejected": rep["summary"]["rejected_patients"],
            "kept_equal": set(clean.table.patient_id) == set(hostile.table.patient_id),
            "values_compared": int(clean.table.drop(columns=["patient_id"]).notna().sum().sum()),
            "values_changed": changed,
            "values_changed_unexpected": {k: v for k, v in changed.items() if k not in expected},
            "values_converted_per_row": rep["summary"]["values_converted_per_row"],
            "hb_rows_in_g_per_l": done["hb_rows_in_g_per_l"],
            "quarantined_values": rep["summary"]["quarantined_values"],
            "not_tested": rep["summary"]["not_tested"],
            "source_columns_ignored": rep["summary"]["source_columns_ignored"],
            "extra_columns": sorted(pd.read_csv(hostile.out_dir / "extra.csv", nrows=1).columns[1:]),
            "seconds_clean": round(t_clean, 2), "seconds_hostile": round(t_hostile, 2),
            "small_panel_not_tested": small.report["summary"]["not_tested"],
            "small_panel_kept_equal": set(clean.table.patient_id) == set(small.table.patient_id),
            "score_coverage": {"clean": score_coverage(clean.table), "hostile": score_coverage(hostile.table),
                               "small_panel": score_coverage(small.table)},
        }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")
    ok = result["kept_equal"] and result["small_panel_kept_equal"] and not result["values_changed_unexpected"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
