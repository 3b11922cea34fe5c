"""A small portal world shared by the page tests and the browser tests: hospital A's approved
node with an MDS dataset, a pending node of hospital Z, a study, a finished run with rounds, a
registered model, a released and an unreleased synthetic cohort."""
from __future__ import annotations

from fedhaem_kernel.schema import SCHEMAS


def mds_columns() -> list[str]:
    s = SCHEMAS["MDS"]
    return s.group("clinical") + s.group("cytogenetic") + ["os_months", "os_event", "lfs_months", "lfs_event"]


def build_world(admin, coordinator, node_operator, public_key: str, with_run: bool = True,
                with_curves: bool = False) -> dict:
    """Organisations, nodes, datasets, a study; with_run: a finished run with metrics, a model
    version and two cohorts; with_curves: the run's Kaplan-Meier curves file (model/model.json)."""
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from portal.accounts.models import Organisation
    from portal.datasets.models import Dataset
    from portal.nodes import services as node_services
    from portal.nodes.models import WorkerNode
    from portal.studies import services as study_services
    from portal.studies.models import ModelVersion, Run
    from portal.synthesis.models import SyntheticCohort

    org_a, _ = Organisation.objects.get_or_create(code="hosp-a", defaults={"name": "Hospital A"})
    org_z, _ = Organisation.objects.get_or_create(code="hosp-z", defaults={"name": "Hospital Z"})
    # Approved directly: approving through the service would also ask the SuperLink (not running here).
    node = WorkerNode.objects.create(organisation=org_a, name="hosp-a-node", public_key=public_key,
                                     status=WorkerNode.Status.APPROVED, approved_at=timezone.now(), approved_by=admin,
                                     flower_node_id="9000000000000000002")  # as key registration sets it
    node_services.heartbeat(node, {"status": "ok"})
    pending = node_services.register_node(admin, org_z, "hosp-z-node", public_key)
    ds = Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=312, feature_schema=mds_columns(), fingerprint="ab" * 32,
                                quality_report={"rows": 312, "missing_fraction": {"hb": 0.02}})
    Dataset.objects.create(node=pending, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                           patient_count=95, feature_schema=mds_columns(), fingerprint="cd" * 32)
    study = study_services.create_study(coordinator, {
        "title": "MDS overall survival, DeepSurv", "use_case": "MDS", "endpoint": "os",
        "feature_groups": ["clinical", "cytogenetic"], "model_kind": "deepsurv",
        "hyperparameters": {"local_epochs": 1}, "datasets": [ds], "rounds": 3, "min_nodes": 1})
    out = {"node": node, "pending_node": pending, "dataset": ds, "study": study}
    if not with_run:
        return out
    study_services.decide_approval(node_operator, study, ds, "approved")
    run = Run.objects.create(study=study, rounds=3, created_by=coordinator, status=Run.Status.FINISHED,
                             config={"datasets": [{"node": node.name, "name": "mds", "version": 1,
                                                   "fingerprint": ds.fingerprint, "patients": 312}],
                                     "hyperparameters": {"hidden": [32, 32]}, "strategy": "fedavg"})
    for r, c in ((1, 0.62), (2, 0.66), (3, 0.69)):
        study_services.ingest_round(run, r, [{"node": "global", "name": "c_index", "value": c},
                                             {"node": node.name, "name": "c_index", "value": c - 0.01},
                                             {"node": "global", "name": "loss", "value": 3.0 - r / 10}])
    # what the engine's comparison phase adds to the last round (fl_engine.federation.loop)
    study_services.ingest_round(run, 3, [{"node": node.name, "name": "n_holdout", "value": 62},
                                         {"node": node.name, "name": "isolated_c_index", "value": 0.64},
                                         {"node": node.name, "name": "ipss_m_c_index", "value": 0.67},
                                         {"node": node.name, "name": "ipss_m_n", "value": 62},
                                         {"node": "global", "name": "isolated_c_index", "value": 0.64},
                                         {"node": "global", "name": "ipss_m_c_index", "value": 0.67}])
    # a run id may repeat across tests (SQLite reuses ids after a rollback): start from an empty folder
    import shutil
    shutil.rmtree(study_services.run_dir(run))
    if with_curves:  # the curves the comparison phase leaves next to the model (fl_engine.federation.curves)
        import json
        from fl_engine.federation.curves import CURVE_EDGES_MONTHS
        model_dir = study_services.run_dir(run) / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        surv = [round(0.99 ** k, 5) for k in range(len(CURVE_EDGES_MONTHS))]
        groups = [{"score": "model", "label": "FedHaem model", "category": "2-year survival >= 80 %", "n": 40,
                   "survival": surv},
                  {"score": "ipss_m", "label": "IPSS-M", "category": "Very Low", "n": 22, "survival": surv}]
        from portal.core.at_rest import write_file  # encrypted at rest, as the conclusion writes it

        write_file(model_dir / "model.json", json.dumps({"curves": {"times": CURVE_EDGES_MONTHS.tolist(),
                                                                    "groups": groups}}).encode())
    mv = ModelVersion.objects.create(run=run, mlflow_run_id="0" * 32, registered_model_name="fedhaem-mds-os",
                                     version="1", metrics={"centralised_c_index": 0.71})
    released = SyntheticCohort.objects.create(run=run, generator="ctgan", row_count=2, released=True,
                                              validation_report={"gate": {"passed": True}, "dcr_5th": 0.41},
                                              data_card={"intended_use": "method development"})
    released.file.save("released-cohort.csv", ContentFile(b"age,hb,os_months,os_event\n71,9.8,24.0,1\n"))
    unreleased = SyntheticCohort.objects.create(run=run, generator="vae_bgm", row_count=2,
                                                validation_report={"gate": {"passed": False}})
    unreleased.file.save("unreleased-cohort.csv", ContentFile(b"age\n70\n"))
    out.update({"run": run, "model": mv, "released": released, "unreleased": unreleased})
    return out
