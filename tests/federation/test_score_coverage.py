"""The comparison phase says on how many held-out patients each conventional score was
computable, refuses to compare a score under 80 %, reads lesions a hospital declared never
tested by the score's rules, and keeps small counts at the hospital."""
import json

import numpy as np
import pandas as pd
import pytest

from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import check_reply_privacy, NodeReply, split_holdout
from fl_engine.federation.executor import run_in_process
from fl_engine.scores.aml import ELN2022_INPUTS, KARYOTYPE_LESIONS
from fl_engine.scores.conventional import conventional_risks
from fedhaem_kernel.metrics import harrell_c
from fedhaem_kernel.schema import AML, NOT_TESTED_ATTR

# cytogenetic lesions this federation's hospitals do not export as fields (read on the karyotype)
NOT_EXPORTED = ["t_9_22", "t_8_16", "inv3", "mecom_r", "monosomal"]
CBF = ("t_8_21", "inv16")
ADVERSE_KNOWN = ("t_6_9", "kmt2a_r", "del5q", "del7_7q", "del17_17p", "complex")


def aml_table(n: int, seed: int, declared: bool) -> pd.DataFrame:
    """AML patients in schema columns: ELN 2022 lesions at plausible frequencies, a few APL,
    the NOT_EXPORTED lesions empty (declared not tested when `declared`), OS in months."""
    rng = np.random.default_rng(seed)
    freq = {"t_15_17": 0.03, "t_8_21": 0.06, "inv16": 0.06, "t_9_11": 0.02, "t_6_9": 0.01,
            "kmt2a_r": 0.03, "del5q": 0.07, "del7_7q": 0.06, "del17_17p": 0.05, "complex": 0.12,
            "TP53": 0.08, "NPM1": 0.28, "FLT3_ITD": 0.22, "CEBPA_bzip": 0.04}
    df = pd.DataFrame({"patient_id": [f"S{seed}-{i:04d}" for i in range(n)],
                       "age": rng.integers(20, 85, n).astype(float), "sex": rng.choice(["F", "M"], n),
                       "wbc": rng.gamma(1.5, 10, n).round(1), "bm_blast": rng.integers(20, 95, n).astype(float)})
    for c in ELN2022_INPUTS:
        df[c] = (rng.random(n) < freq.get(c, 0.07)).astype(float)
    for c in NOT_EXPORTED:
        df[c] = np.nan
    adverse = df[list(ADVERSE_KNOWN) + ["TP53"]].max(axis=1)
    risk = 0.03 * (df.age - 60) + 0.9 * adverse - 0.8 * df[list(CBF)].max(axis=1)
    t = rng.exponential(30 * np.exp(-risk))
    cens = rng.uniform(6, 90, n)
    df["os_months"] = np.minimum(t, cens).round(2)
    df["os_event"] = (t <= cens).astype(float)
    if declared:
        df.attrs[NOT_TESTED_ATTR] = sorted(NOT_EXPORTED)
    return df


def decided_without_declaration(df: pd.DataFrame) -> np.ndarray:
    """The oracle when the empty lesions are unknown: ELN 2022 decides a patient only through
    core-binding-factor AML or a known adverse cytogenetic lesion (the unknown ones could be
    present), and never an APL patient."""
    apl = df["t_15_17"].to_numpy() == 1
    return ~apl & ((df[list(CBF)].to_numpy() == 1).any(axis=1) | (df[list(ADVERSE_KNOWN)].to_numpy() == 1).any(axis=1))


def _run(tables: dict, tmp_path, **cfg) -> tuple[dict, list[str]]:
    path = tmp_path / f"events-{len(list(tmp_path.iterdir()))}.jsonl"
    conf = {"dataset": "d", "use_case": "AML", "num_rounds": 1, "min_nodes": len(tables), "seed": 4,
            "comparison": True, "metrics_path": str(path), **cfg}
    hist = run_in_process(conf, tables)
    last = {(m["node"], m["name"]): m["value"] for m in hist.rounds[-1]["metrics"]}
    events = [json.loads(line) for line in path.read_text().splitlines()]
    notes = [n for e in events if e.get("phase") == "comparison_coverage" for n in e["notes"]]
    return last, notes


def test_undeclared_lesions_leave_eln2022_uncompared_and_the_phase_says_so(tmp_path):
    tables = {f"H{i}": aml_table(150, i, declared=False) for i in (1, 2, 3)}
    last, notes = _run(tables, tmp_path)
    cfg = parse_run_config({"dataset": "d", "seed": 4})
    holds = {k: split_holdout(df, cfg.holdout_fraction, cfg.seed)[1] for k, df in tables.items()}
    want_n = sum(int(decided_without_declaration(h).sum()) for h in holds.values())
    want_of = sum(len(h) for h in holds.values())
    assert want_n < 0.8 * want_of  # the cohort is built so: most patients are undecidable
    for k, h in holds.items():
        assert last[(k, "eln2022_n")] == decided_without_declaration(h).sum()
    assert (last[("global", "eln2022_n")], last[("global", "eln2022_of")]) == (want_n, want_of)
    assert last[("global", "eln2022_comparable")] == 0
    assert ("global", "eln2022_c_index") not in last  # refused, not silently shown
    assert notes == [f"ELN 2022: not compared: computable on {want_n} of {want_of} held-out test patients "
                     f"({want_n / want_of:.0%}), under the 80% a comparison needs"]


def test_declared_lesions_are_read_on_the_karyotype_and_eln2022_is_compared(tmp_path):
    tables = {f"H{i}": aml_table(150, i, declared=True) for i in (1, 2, 3)}
    last, notes = _run(tables, tmp_path)
    cfg = parse_run_config({"dataset": "d", "seed": 4})
    n = of = 0
    cs, ws = [], []
    for k, df in tables.items():
        hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)[1]
        assert hold.attrs[NOT_TESTED_ATTR] == sorted(NOT_EXPORTED)  # the split keeps the declaration
        apl = hold["t_15_17"].to_numpy() == 1
        assert last[(k, "eln2022_n")] == len(hold) - apl.sum()  # every patient but APL is scored
        n, of = n + len(hold) - apl.sum(), of + len(hold)
        cs.append(last[(k, "eln2022_c_index")])
        ws.append(last[(k, "eln2022_n")])
    assert (last[("global", "eln2022_n")], last[("global", "eln2022_of")]) == (n, of)
    assert last[("global", "eln2022_comparable")] == 1
    c = last[("global", "eln2022_c_index")]
    assert c == pytest.approx(np.average(cs, weights=ws))
    assert notes == [f"ELN 2022 C {c:.3f} on {n} of {of} held-out test patients"]


def test_a_declared_lesion_is_taken_absent_only_where_the_karyotype_was_read(tmp_path):
    df = aml_table(150, 7, declared=True)
    cfg = parse_run_config({"dataset": "d", "seed": 4})
    hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)[1]
    failed = hold.index[:10]  # karyotype failed for these patients: complex unknown
    df.loc[failed, "complex"] = np.nan
    tables = {"H1": df, "H2": aml_table(150, 8, declared=True)}
    last, _ = _run(tables, tmp_path)
    hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)[1]
    no_karyo = hold["complex"].isna().to_numpy()
    apl = hold["t_15_17"].to_numpy() == 1
    # without a karyotype a declared lesion stays unknown: such a patient is decided only by a
    # known positive lesion before the unknown ones matter (CBF, or a known adverse lesion)
    decided = ~apl & (~no_karyo | decided_without_declaration(hold))
    assert last[("H1", "eln2022_n")] == decided.sum() < len(hold) - apl.sum()


def test_small_computable_counts_stay_at_the_hospital(tmp_path):
    big = {f"H{i}": aml_table(150, i, declared=True) for i in (1, 2)}
    cfg = parse_run_config({"dataset": "d", "seed": 4})
    small = aml_table(150, 3, declared=False)
    hold = split_holdout(small, cfg.holdout_fraction, cfg.seed)[1]
    for c in CBF + ADVERSE_KNOWN:  # undecidable everywhere, but for three held-out patients
        small[c] = 0.0
    small.loc[hold.index[:3], "t_8_21"] = 1.0
    small.loc[hold.index[:3], "t_15_17"] = 0.0
    last, notes = _run({**big, "H3": small}, tmp_path, min_cell_count=5)
    assert last[("H3", "eln2022_suppressed")] == 1
    assert ("H3", "eln2022_n") not in last and ("H3", "eln2022_c_index") not in last
    # the global count is then a lower bound over the hospitals that reported, and says so
    n = last[("H1", "eln2022_n")] + last[("H2", "eln2022_n")]
    assert last[("global", "eln2022_n")] == n and last[("global", "eln2022_suppressed_nodes")] == 1
    assert last[("global", "eln2022_of")] == sum(last[(k, "n_holdout")] for k in ("H1", "H2", "H3"))
    assert "1 hospital(s) withheld a count under the small-cell rule" in notes[0]
    # and the reply that carries the marker passes the privacy check
    check_reply_privacy("reference", NodeReply("H3", metrics={"n_holdout": 30, "eln2022_suppressed": 1}), None)


def test_a_small_held_out_split_reports_no_score_count(tmp_path):
    tables = {"H1": aml_table(150, 1, declared=True), "H2": aml_table(150, 2, declared=True),
              "H3": aml_table(20, 3, declared=True)}  # 4 held-out patients
    last, _ = _run(tables, tmp_path, min_cell_count=5)
    assert last[("H3", "eln2022_suppressed")] == 1 and ("H3", "eln2022_n") not in last
    assert ("H1", "eln2022_n") in last


def test_harrell_c_of_the_compared_score_is_the_one_on_the_computable_patients(tmp_path):
    tables = {f"H{i}": aml_table(150, i, declared=True) for i in (1, 2)}
    last, _ = _run(tables, tmp_path)
    cfg = parse_run_config({"dataset": "d", "seed": 4})
    for k, df in tables.items():
        hold = split_holdout(df, cfg.holdout_fraction, cfg.seed)[1].reset_index(drop=True)
        risk = conventional_risks(hold, "AML")["eln2022"]
        ok = ~np.isnan(risk)
        want = harrell_c(hold.os_months.to_numpy()[ok], hold.os_event.to_numpy()[ok], risk[ok])
        assert last[(k, "eln2022_c_index")] == pytest.approx(want, abs=1e-12)


def test_every_karyotype_lesion_is_cytogenetic_in_the_schema():
    assert {AML.feature(c).group for c in KARYOTYPE_LESIONS} == {"cytogenetic"}
