"""The issue's check on the IWG-PM layout, through the CLI: bundles, table and report are
written and the table holds every patient the report does not reject; a copy missing a
required column exits non-zero naming the column and registers nothing."""
import json
import shutil

import pandas as pd
import pytest

from etl.cli import main
from etl.registry import DatasetRegistry

pytestmark = pytest.mark.realdata


def _subset(src, dst, n=150, drop=None, bad_gene=False):
    dst.mkdir()
    clin = pd.read_csv(src / "df_clinical.tsv", sep="\t", dtype=str, keep_default_na=False)
    clin = clin.iloc[:n]
    if drop:
        clin = clin.drop(columns=[drop])
    clin.to_csv(dst / "df_clinical.tsv", sep="\t", index=False)
    for name in ("df_mut.tsv", "df_cna.tsv", "maf.tsv"):
        shutil.copy(src / name, dst / name)
    if bad_gene:
        maf = pd.read_csv(dst / "maf.tsv", sep="\t", dtype=str, keep_default_na=False)
        i = maf.index[maf.ID == clin.ID.iloc[3]][0]
        maf.loc[i, "GENE"] = "TPX53"
        maf.to_csv(dst / "maf.tsv", sep="\t", index=False)
    return clin


def test_cli_etl_on_iwgpm_subset_and_bad_gene(iwgpm_dir, tmp_path, capsys):
    clin = _subset(iwgpm_dir, tmp_path / "src", bad_gene=True)
    rc = main(["etl", "--use-case", "mds", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "out"
    table = pd.read_parquet(out / "table.parquet")
    rep = json.loads((out / "quality.json").read_text())
    rejected = {r["patient_id"] for r in rep["rejected"]}
    assert rejected == {clin.ID.iloc[3]}
    bad = rep["rejected"][0]
    assert bad["file"].endswith("maf.tsv") and bad["column"] == "GENE" and "TPX53" in bad["reason"]
    assert set(table.patient_id) == set(clin.ID) - rejected
    assert sum(1 for _ in open(out / "bundles.ndjson")) == len(table)
    # stray rows of the other files (patients not in this clinical subset) are listed, not lost
    assert rep["summary"]["dropped_rows"] > 0


def test_cli_missing_required_column_registers_nothing(iwgpm_dir, tmp_path, capsys):
    _subset(iwgpm_dir, tmp_path / "src", n=40, drop="AGE")
    rc = main(["etl", "--use-case", "mds", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc != 0 and "'AGE'" in err and "df_clinical.tsv" in err and "missing required column" in err
    assert not (tmp_path / "out" / "manifest.json").exists()
    rc = main(["register", "--name", "iwgpm", "--dataset", str(tmp_path / "out"), "--data-dir",
               str(tmp_path / "node")])
    assert rc != 0
    assert DatasetRegistry(tmp_path / "node").list() == []


def test_iwgpm_layout_is_mds_only(iwgpm_dir, tmp_path):
    from etl.errors import EtlError
    from etl.pipeline import run_etl
    with pytest.raises(EtlError, match="MDS cohort, not AML"):
        run_etl("aml", [iwgpm_dir], tmp_path / "o")
