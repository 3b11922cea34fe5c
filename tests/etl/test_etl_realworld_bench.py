"""bench/etl_realworld.py on the IWG-PM cohort: the hostile export keeps exactly the clean
import's patients and changes only the values it was told to (dropped, not tested, extreme)."""
import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "etl_realworld.py"


def test_hostile_iwgpm_export_keeps_the_clean_patients(iwgpm_dir, capsys):
    spec = importlib.util.spec_from_file_location("etl_realworld", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--json", "--g-per-l-share", "0.1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kept_equal"] and res["hostile_patients"] == res["clean_patients"]
    assert res["values_changed_unexpected"] == {} and res["values_changed"]["wbc"] == 1
    assert res["values_converted_per_row"] == res["hb_rows_in_g_per_l"] > 0
    assert res["not_tested"] == ["CUX1", "DDX41", "ZRSR2"] and res["extra_columns"] == ["protocol"]
    # score coverage: the genes dropped are no IPSS-M input, so the hostile export covers what
    # the clean import covers; the small panel widens the IPSS-M scenarios (spread > 0)
    cov = res["score_coverage"]
    assert set(cov) == {"clean", "hostile", "small_panel"} and res["small_panel_kept_equal"]
    for name in ("ipss_m", "ipss_r"):
        n, of = map(int, cov["clean"][name]["computable"].split(" of "))
        assert of == res["clean_patients"] and 0 < n <= of
        assert cov["hostile"][name]["computable"] == cov["clean"][name]["computable"]
    assert cov["clean"]["ipss_m"]["spread"]["median"] == 0
    assert cov["small_panel"]["ipss_m"]["spread"]["median"] > 0 and cov["small_panel"]["ipss_m"]["spread"]["none"] == 0
    assert cov["small_panel"]["ipss_r"] == cov["clean"]["ipss_r"]  # IPSS-R reads no gene
