import datetime as dt
import json

import pytest
from pydantic import ValidationError

from generative import GateThresholds, build_data_card, evaluate_gate


def report(**priv):
    base = {"synthetic_nndr_p5": 0.7, "holdout_nndr_p5": 0.72, "synthetic_dcr_p5": 1.2, "holdout_dcr_p5": 1.2,
            "synthetic_exact_copy_rate": 0.0, "holdout_exact_copy_rate": 0.0, "mia_auc": 0.52,
            "synthetic_rare_combination_rate": 0.1, "holdout_rare_combination_rate": 0.1}
    base.update(priv)
    return {"csf": 0.95, "gsf": 0.9, "nndr_p5": base["synthetic_nndr_p5"], "tstr_c_index": 0.7,
            "n_nodes": 3, "n_real": 1000, "privacy": base}


def test_passes_when_every_threshold_holds():
    g = evaluate_gate(report())
    assert g["passed"] and g["failed"] == []
    assert [c["name"] for c in g["checks"]] == ["nndr_p5_ratio", "dcr_p5_ratio", "exact_copy_excess",
                                                "mia_auc", "rare_combination_ratio"]


def test_failure_names_the_test_and_by_how_much():
    g = evaluate_gate(report(mia_auc=0.71, synthetic_nndr_p5=0.36))
    assert not g["passed"] and g["failed"] == ["nndr_p5_ratio", "mia_auc"]
    mia = next(c for c in g["checks"] if c["name"] == "mia_auc")
    assert mia["measured"] == pytest.approx(0.71) and mia["threshold"] == 0.60
    assert mia["margin"] == pytest.approx(-0.11)
    nndr = next(c for c in g["checks"] if c["name"] == "nndr_p5_ratio")
    assert nndr["measured"] == pytest.approx(0.5) and nndr["margin"] == pytest.approx(0.5 - 0.90)


def test_unmeasured_metric_fails_closed():
    rep = report()
    del rep["privacy"]["mia_auc"]
    g = evaluate_gate(rep)
    assert not g["passed"] and "mia_auc" in g["failed"]
    assert evaluate_gate({"csf": 0.99})["passed"] is False


def test_thresholds_are_configurable_and_validated():
    loose = GateThresholds(mia_auc_max=0.75)
    assert evaluate_gate(report(mia_auc=0.71), loose)["passed"]
    with pytest.raises(ValidationError):
        GateThresholds(mia_auc_max=0.3)
    with pytest.raises(ValidationError):
        GateThresholds(unknown=1)


def test_data_card_has_the_release_facts():
    rep = report()
    gate = evaluate_gate(rep)
    when = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
    card = build_data_card(generator="vae_bgm", generator_params={"latent": 8}, study="MDS-synth", run=17,
                           rounds=5, report=rep, gate=gate, n_rows=4427, created=when)
    assert card["generator"] == "vae_bgm" and card["study"] == "MDS-synth" and card["run"] == 17
    assert card["rounds"] == 5 and card["rows"] == 4427 and card["created"] == "2026-11-29T12:00:00+00:00"
    assert card["scores"] == {"csf": 0.95, "gsf": 0.9, "nndr_p5": 0.7, "tstr_c_index": 0.7}
    assert card["thresholds"]["mia_auc_max"] == 0.60 and card["gate"]["passed"] is True
    json.dumps(card)
