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
    assert res["not_tested"] == ["CUX1", "DDX41", "ZRSR2"] and res["extra_columns"] == ["ecog"]
