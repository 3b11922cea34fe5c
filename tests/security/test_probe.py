"""The security probe (bench/security_probe.py) against a live demo: the twelve cases of issue 12
and a sample of the role-by-endpoint matrix (anonymous, clinician, coordinator, outsider, a node
token). The full matrix runs with `bench/security_probe.py --json`."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_security_probe_finds_no_failure():
    from bench.security_probe import run

    result = run(quick=True)
    assert result["failed"] == [], result["failed"]
    assert result["tried"] >= 150
    assert result["held"] == result["tried"]
