"""The run contract: one spec of every setting (fl_engine.federation.contract), the nested form
the portal builds, and the single value that crosses Flower."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from fl_engine.federation.config import as_run_config, build_contract, parse_contract, parse_run_config
from fl_engine.federation.contract import (DEFAULT_RUN_CONFIG, FLOWER_KEY, MAX_ROUNDS, SECTIONS, SETTINGS, bounds,
                                           flatten, from_flower, nest, to_flower)

REPO = Path(__file__).resolve().parents[2]
APP_TOML = REPO / "fl_engine" / "federation" / "app" / "pyproject.toml"


def test_flower_declares_one_key_and_no_default_of_its_own():
    declared = tomllib.loads(APP_TOML.read_text())["tool"]["flwr"]["app"]["config"]
    assert declared == {FLOWER_KEY: ""}


def test_every_setting_is_in_one_section_once_and_its_default_is_valid():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert {s.section for s in SETTINGS} == set(SECTIONS)
    assert all(s.check(s.default) == "" for s in SETTINGS), [s.name for s in SETTINGS if s.check(s.default)]
    cfg = parse_run_config({})
    assert cfg.to_flat().keys() == DEFAULT_RUN_CONFIG.keys()


def test_the_contract_round_trips_through_flower():
    cfg = parse_run_config({"dataset": "mds", "num_rounds": 7, "model_params": '{"hidden": [16]}',
                            "participants": '[{"node": "a", "node_id": "18446744073709551615"}]',
                            "features": "age,hb", "dp_enabled": True})
    contract = cfg.to_contract()
    assert set(contract) <= set(SECTIONS) and contract["federation"]["num_rounds"] == 7
    assert contract["model"]["model_params"] == '{"hidden": [16]}'
    wire = to_flower(contract)
    assert list(wire) == [FLOWER_KEY] and isinstance(wire[FLOWER_KEY], str)
    assert parse_run_config(from_flower(wire)) == cfg
    assert as_run_config(contract) == as_run_config(cfg.to_flat()) == as_run_config(cfg) == cfg


def test_the_builder_takes_python_values_and_names_what_is_wrong():
    contract = build_contract(data={"dataset": "mds", "features": ["age", "hb"]},
                              model={"model": "savae", "model_params": {"latent": 4}},
                              federation={"num_rounds": 2, "participants": [{"node": "a", "node_id": "7"}]})
    cfg = parse_contract(contract)
    assert (cfg.model, cfg.model_params, cfg.features, cfg.num_rounds) == ("savae", {"latent": 4}, ("age", "hb"), 2)
    assert cfg.participants[0]["node_id"] == "7" and cfg.min_nodes == DEFAULT_RUN_CONFIG["min_nodes"]
    with pytest.raises(ValueError, match=r"num_rounds=501: must be in \[1, 500\]"):
        build_contract(federation={"num_rounds": MAX_ROUNDS + 1})
    with pytest.raises(ValueError, match=r"model\.num_rounds is not a setting of that section \(it belongs to 'federation'\)"):
        build_contract(model={"num_rounds": 2})
    with pytest.raises(ValueError, match="unknown section 'training'"):
        build_contract(training={"num_rounds": 2})
    with pytest.raises(ValueError, match=r"fraction_train=0.0: must be in \(0, 1\]"):
        build_contract(federation={"fraction_train": 0})
    with pytest.raises(ValueError, match="model='coxnet': must be one of deepsurv, savae, cox"):
        build_contract(model={"model": "coxnet"})


def test_a_node_reads_a_newer_managers_contract_leniently():
    wire = {FLOWER_KEY: json.dumps({"data": {"dataset": "mds", "new_setting": 1}, "future": {"x": 1}})}
    assert parse_run_config(from_flower(wire, strict=False), strict=False).dataset == "mds"
    with pytest.raises(ValueError, match="new_setting"):
        from_flower(wire)
    with pytest.raises(ValueError, match="contract is not valid JSON"):
        from_flower({FLOWER_KEY: "{"})


def test_nest_and_flatten_are_inverse():
    flat = parse_run_config({}).to_flat()
    assert flatten(nest(flat)) == flat


def test_no_bound_of_a_run_setting_is_written_twice_in_the_portal():
    """The portal's forms, serializers and models take the bounds of rounds from the spec."""
    assert bounds("num_rounds").hi == MAX_ROUNDS
    hits = []
    for path in (REPO / "portal").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"max_value=500\b|<= 500\b|between 1 and 500", text):
            hits.append(f"{path.relative_to(REPO)}:{text[:m.start()].count(chr(10)) + 1}")
    assert hits == []
