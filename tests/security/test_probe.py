"""The security probe (bench/security_probe.py) against a live demo: the twelve cases of issue 12
and a sample of the role-by-endpoint matrix (anonymous, clinician, coordinator, outsider, a node
token). The full matrix runs with `bench/security_probe.py --json`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location("bench_security_probe", REPO / "bench" / "security_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_security_probe_finds_no_failure():
    result = _probe().run(quick=True)
    assert result["failed"] == [], result["failed"]
    assert result["tried"] >= 150
    assert result["held"] == result["tried"]
