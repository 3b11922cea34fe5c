"""A survival run on the demo federation's data (in process), concluded through the portal's
real path (events, conclusion, MLflow registration); its capsule re-run by `rerun_capsule`
reproduces the final C-index to 1e-6, and a changed seed or fingerprint is caught."""
from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from fl_engine.node.datasets import open_registry
from fl_engine.federation.config import parse_contract
from fl_engine.federation.events import EventSink
from fl_engine.federation.executor import LocalTransport
from fl_engine.federation.loop import run_federation
from portal.accounts.models import Organisation
from portal.audit.models import AuditEvent
from portal.datasets import services as dataset_services
from portal.nodes import services as node_services
from portal.nodes.models import WorkerNode
from portal.ops import federation_demo
from portal.studies import lifecycle, services
from portal.studies.models import ModelVersion, Study, StudyApproval
from tests.conftest import fresh_p384_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_model(personas, settings, tmp_path):
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    settings.MLFLOW_ARTIFACT_ROOT = str(tmp_path / "mlflow" / "artifacts")
    federation_demo.prepare_node_data(echo=lambda *_: None)
    datasets, tables = [], {}
    for i, (name, _) in enumerate(federation_demo.NODES):
        org = Organisation.objects.get_or_create(code=name, defaults={"name": name})[0]
        node = node_services.register_node(personas["administrator"], org, name, fresh_p384_key())
        node_services.approve_node(personas["administrator"], node)
        WorkerNode.objects.filter(pk=node.pk).update(flower_node_id=str(9100000000000000000 + i))
        node.refresh_from_db()
        reg = open_registry(federation_demo.node_dir(name) / "data")  # the node's keyring: encrypted tables
        ds, _ = dataset_services.announce(node, node.service_user, reg.get(federation_demo.DATASET).announcement())
        datasets.append(ds)
        tables[name] = reg.load_table(federation_demo.DATASET)
    study = Study.objects.create(title="Capsule", use_case="MDS", owner=personas["coordinator"], min_nodes=2,
                                 features=["age", "hb"], hyperparameters={"local_epochs": 1}, rounds=2)
    study.datasets.set(datasets)
    for ds in datasets:
        StudyApproval.objects.create(study=study, dataset=ds, decision="approved",
                                     decided_by=personas["node_operator"], settings_hash=services.settings_hash(study))
    run = services.start_run(personas["coordinator"], study, comparison=False)
    contract = services.flower_run_config(run)
    contract["reporting"]["events_url"] = ""
    cfg = parse_contract(contract)
    events = tmp_path / "events.jsonl"
    run_federation(cfg, LocalTransport(cfg, tables), EventSink(run.pk, path=events))
    assert lifecycle.transition(run.pk, "starting") and lifecycle.transition(run.pk, "running", flower_run_id="77")
    for line in events.read_text().splitlines():
        lifecycle.ingest_event(run.pk, json.loads(line))
    assert lifecycle.conclude(run.pk) == "finished"
    return ModelVersion.objects.get(run=run)


def test_a_capsule_rerun_reproduces_the_c_index(finished_model, personas, api, tmp_path, capsys):
    mv = finished_model
    assert mv.lineage["code"]["source_sha256"] and len(mv.lineage["datasets"]) == 3
    r = api(personas["clinician"]).get(f"/api/models/{mv.pk}/capsule/")
    assert r.status_code == 200, r.content
    assert r["Content-Disposition"].endswith('-capsule.json"')
    assert AuditEvent.objects.filter(action="model.capsule", object_id=str(mv.pk)).exists()
    doc = json.loads(r.content)
    assert {d["fingerprint"] for d in doc["datasets"]} == {d["fingerprint"] for d in mv.run.config["datasets"]}
    path = tmp_path / "capsule.json"
    path.write_text(r.content.decode())
    capsys.readouterr()
    call_command("rerun_capsule", str(path), "--json")
    out = json.loads(capsys.readouterr().out)
    print("capsule re-run C-index difference:", out["difference"])
    assert out["reproduced"] and out["difference"] <= 1e-6 and out["code_matches"]
    assert 0.5 < out["rerun"] < 1.0

    changed = dict(doc, contract={**doc["contract"], "data": {**doc["contract"]["data"], "seed": 99}})
    path.write_text(json.dumps(changed))
    with pytest.raises(CommandError, match="not reproduced"):
        call_command("rerun_capsule", str(path))

    wrong = dict(doc, datasets=[{**doc["datasets"][0], "fingerprint": "0" * 64}, *doc["datasets"][1:]])
    path.write_text(json.dumps(wrong))
    with pytest.raises(CommandError, match=f"node {doc['datasets'][0]['node']}: no version"):
        call_command("rerun_capsule", str(path))
    path.write_text(json.dumps({**doc, "result": {}}))
    with pytest.raises(CommandError, match="result"):
        call_command("rerun_capsule", str(path))
