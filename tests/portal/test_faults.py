"""The run lifecycle under real faults (issue 13): bench/faults.py in a reduced mode. One demo
(real processes, its own var folder and ports), one run per fault, each fault once (a worker
node, the Celery worker, Redis, the SuperLink, the portal killed at a random point of a run),
plus two studies at once under a small CPU hog. Every run ends, and every finished run has
each round's global C-index and a registered model."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_faults", REPO / "bench" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_run_ends_under_each_fault():
    faults = _bench()
    args = faults.parser().parse_args(["--repeat", "1", "--rounds", "2", "--seed", "5", "--studies", "2",
                                       "--hogs", "1", "--hog-seconds", "15", "--window", "30"])
    result = faults.bench(args, echo=print)
    summary = json.dumps({k: v for k, v in result.items() if k != "per_fault"}, indent=1)
    assert result["faults_tried"] == len(faults.FAULTS), json.dumps(result["per_fault"], indent=1)
    assert result["stranded"] == 0, summary
    assert result["lost_metrics"] == 0, summary
    assert result["lost_models"] == 0, summary
    assert result["unexplained_failures"] == 0, summary
