"""The demo's set-up without its processes: each node's registry holds its share of a generated
MDS and a generated SCD cohort, the portal has both demo studies ready and approved by every
hospital, and the SCD analysis study carries analysis settings the engine accepts, bound to the
approvals (a re-run of the set-up changes nothing)."""
from __future__ import annotations

import pytest
from django.core.management import call_command

from etl.registry import DatasetRegistry
from fl_engine.analytics.settings import validate_analysis
from portal.ops import federation_demo as demo
from portal.studies import services
from portal.studies.models import Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_demo_nodes_hold_mds_and_scd_and_both_studies_are_ready_and_approved(var_dir):
    call_command("seed_demo", verbosity=0)
    lines: list[str] = []
    demo.prepare_node_data(lines.append)
    demo.enrol_nodes()
    demo.ensure_demo_study(lines.append)
    sizes = {}
    for name, _ in demo.NODES:
        names = {e.name: e for e in DatasetRegistry(demo.node_dir(name) / "data").list()}
        assert set(names) == {demo.DATASET, demo.SCD_DATASET}, name
        sizes[name] = names[demo.SCD_DATASET].patient_count
    assert sum(sizes.values()) == demo.SCD_COHORT_SIZE and sizes["hosp-a"] > sizes["hosp-b"] > sizes["hosp-c"]
    scd = Study.objects.get(title=demo.SCD_STUDY_TITLE)
    assert scd.use_case == "SCD" and scd.status == "ready"
    assert scd.analysis == validate_analysis("SCD", "os", demo.SCD_ANALYSIS)
    assert scd.analysis["group_by"] == "genotype" and scd.analysis["cox_stratified"] is True
    for study in (Study.objects.get(title=demo.STUDY_TITLE), scd):
        state = services.approval_state(study)
        assert len(state) == 3 and all(a["decision"] == "approved" and not a["stale"] for a in state), state
    assert services.study_settings(scd)["analysis"] == scd.analysis  # what the hospitals approved
    # the set-up is idempotent: a second start finds everything in place
    demo.prepare_node_data(lines.append)
    demo.ensure_demo_study(lines.append)
    assert Study.objects.filter(title__startswith="Demo:").count() == 2
    assert sum("registered as scd-demo" in line for line in lines) == 3


def test_the_demo_uses_the_warm_serverapp_launcher_unless_the_environment_says_otherwise(monkeypatch):
    from fl_engine.deploy.processes import SERVERAPP_LAUNCHER_ENV

    monkeypatch.delenv(SERVERAPP_LAUNCHER_ENV, raising=False)
    assert demo.demo_serverapp_launcher() == "prefork"
    monkeypatch.setenv(SERVERAPP_LAUNCHER_ENV, "0")
    assert demo.demo_serverapp_launcher() == "flower"
    monkeypatch.setenv(SERVERAPP_LAUNCHER_ENV, "yes")
    with pytest.raises(RuntimeError, match=SERVERAPP_LAUNCHER_ENV):
        demo.demo_serverapp_launcher()
