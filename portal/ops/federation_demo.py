"""The demo federation of `manage.py demo`: a SuperLink (TLS + SuperNode authentication) and
three worker nodes holding 60% / 30% / 10% of a generated MDS cohort and of a generated sickle
cell disease (SCD) cohort, approved in the portal, plus two ready studies: "Demo: MDS overall
survival (DeepSurv)" and the analysis study "Demo: SCD registry description (analysis)"."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from fl_engine.analytics.settings import validate_analysis
from fl_engine.cohort import generate_mds_cohort, generate_scd_cohort, split_nodes
from fl_engine.deploy.pki import ensure_dev_pki, ensure_node_keys
from fl_engine.deploy.processes import (SERVERAPP_LAUNCHER_ENV, SERVERAPP_POLL_S, serverapp_launcher_default,
                                       start_superlink)
from fl_engine.node.datasets import metadata_registry, open_registry
from portal.accounts.models import Organisation
from portal.audit.services import record
from portal.datasets import services as dataset_services
from portal.nodes import services as node_services
from portal.nodes.models import WorkerNode
from portal.ops.supervisor import Service
from portal.studies import flower_adapter
from portal.studies import services as study_services
from portal.studies.models import Study, StudyApproval

NODES = [("hosp-a", 0.6), ("hosp-b", 0.3), ("hosp-c", 0.1)]
DATASET = "mds-demo"
STUDY_TITLE = "Demo: MDS overall survival (DeepSurv)"
COHORT_SIZE = 4000
SCD_DATASET = "scd-demo"
SCD_STUDY_TITLE = "Demo: SCD registry description (analysis)"
SCD_COHORT_SIZE = 1500
# what a haematologist asks first of a sickle cell registry: the cohort by genotype, its survival
# curves, the log-rank test and a Cox model stratified by hospital
# The demo hospitals' clinicians register their datasets (portal.devidp.people). Hospital A's SCD
# dataset is left announced, not registered, for the demo's clinician to register from the
# "Register a dataset" page.
REGISTRARS = {"hosp-a": "clinician", "hosp-b": "clinicianb", "hosp-c": "clinicianc"}
LEFT_TO_REGISTER = {("hosp-a", "scd-demo")}
DEMO_POLICY = {"sensitivity": "general", "consent_scope": "fine_grained",
               "purposes": ["analysis", "synthesis", "training"], "require_dp": False, "min_cell_count": 0,
               "expires_on": None}
SCD_ANALYSIS = {"group_by": "genotype", "covariates": ["age", "sex", "hb", "hbf"], "cox_stratified": True,
                "time_step_months": 3.0}


def node_dir(name: str) -> Path:
    return Path(settings.VAR_DIR) / "demo-nodes" / name


def prepare_node_data(echo=print) -> None:
    """Generate the cohorts once and register each hospital's share in its own local registry."""
    # each node's own registry with its keyring: the tables are encrypted at rest (docs/encryption-at-rest.md)
    registries = {name: open_registry(node_dir(name) / "data") for name, _ in NODES}
    for dataset, use_case, make, size in ((DATASET, "MDS", generate_mds_cohort, COHORT_SIZE),
                                          (SCD_DATASET, "SCD", generate_scd_cohort, SCD_COHORT_SIZE)):
        if all(any(e.name == dataset for e in r.list()) for r in registries.values()):
            continue
        cohort = make(n=size, seed=7)
        parts = split_nodes(cohort, fractions=tuple(f for _, f in NODES), seed=7)
        for (name, _), part in zip(NODES, parts):
            entry, _ = registries[name].register(dataset, part.reset_index(drop=True), use_case,
                                                 source=f"fl_engine.cohort.{make.__name__}(seed=7)")
            echo(f"  {name}: {entry.patient_count} generated patients registered as {dataset} v{entry.version}")


@transaction.atomic
def enrol_nodes() -> dict[str, str]:
    """Register and approve the demo nodes in the portal; returns name -> API token."""
    admin = get_user_model().objects.get(username="admin")
    tokens = {}
    for name, _ in NODES:
        keys = ensure_node_keys(node_dir(name) / "keys")
        token_file = node_dir(name) / "token"
        node = WorkerNode.objects.filter(name=name).first()
        if node is None:
            node = node_services.register_node(admin, Organisation.objects.get(code=name), name, keys.public_text())
        if node.status != WorkerNode.Status.APPROVED:
            token_file.write_text(node_services.approve_node(admin, node))
            token_file.chmod(0o600)
        elif not token_file.exists():
            token_file.write_text(node_services.issue_token(admin, node))
            token_file.chmod(0o600)
        tokens[name] = token_file.read_text().strip()
        # The nodes start right after this: register their keys with the SuperLink now, not
        # through the Celery task that approval queues (idempotent either way).
        transaction.on_commit(lambda pk=node.pk: flower_adapter.sync_node_key(pk))
    return tokens


def _announced(dataset: str) -> list:
    """The demo nodes' `dataset` as each node announces it to the portal."""
    datasets = []
    for name, _ in NODES:
        node = WorkerNode.objects.get(name=name)
        entry = metadata_registry(node_dir(name) / "data").get(dataset)
        ds, _ = dataset_services.announce(node, node.service_user, {**entry.announcement()})
        if ds.catalogued_at is None and (name, dataset) not in LEFT_TO_REGISTER:
            ds = _register_for_demo(ds, name)
        datasets.append(ds)
    return datasets


def _register_for_demo(ds, hospital: str):
    """Hospital `hospital`'s demo clinician registers the announced dataset (audited as such)."""
    clinician = get_user_model().objects.filter(username=REGISTRARS.get(hospital, ""),
                                                organisation__code=hospital).first()
    if clinician is None:  # the people are seeded by `seed_demo`; without them the dataset stays announced
        return ds
    label = {"MDS": "myelodysplastic syndromes", "SCD": "sickle cell disease"}.get(ds.use_case, ds.use_case)
    return dataset_services.register(clinician, ds, {
        "title": f"Demo {label} cohort, {hospital}",
        "clinical_description": f"Generated {label} patients of {hospital} (demo data, not patients).",
        "contact": f"{clinician.username}@{hospital}.example.org"}, DEMO_POLICY)


def ensure_demo_study(echo=print) -> None:
    """Datasets as announced by the nodes, the demo studies, and the operators' approvals."""
    User = get_user_model()
    datasets = _announced(DATASET)
    study = Study.objects.filter(title=STUDY_TITLE).first()
    if study is None:
        study = study_services.create_study(User.objects.get(username="coordinator"), {
            "title": STUDY_TITLE, "use_case": "MDS", "endpoint": "os",
            "description": "DeepSurv on clinical, cytogenetic and genomic features of a generated MDS "
                           "cohort split 60/30/10 over three hospitals (demo data, not patients).",
            "feature_groups": ["clinical", "cytogenetic", "genomic"], "model_kind": "deepsurv",
            "hyperparameters": {"local_epochs": 2}, "rounds": 5, "fraction_nodes": 1.0, "min_nodes": 2,
            "status": "ready", "datasets": datasets})
    else:
        study.datasets.set(datasets)
    operator = User.objects.get(username="nodeoperator")
    for ds in datasets:
        _approve_for_demo(study, ds, operator)
    echo(f"  study ready: {STUDY_TITLE} (id {study.pk})")
    ensure_scd_study(echo)


def ensure_scd_study(echo=print) -> None:
    """The SCD analysis study over the nodes' scd-demo datasets, approved (its Run analysis button
    is on the study page)."""
    User = get_user_model()
    datasets = _announced(SCD_DATASET)
    study = Study.objects.filter(title=SCD_STUDY_TITLE).first()
    if study is None:
        study = study_services.create_study(User.objects.get(username="coordinator"), {
            "title": SCD_STUDY_TITLE, "use_case": "SCD", "endpoint": "os",
            "description": "Description, Kaplan-Meier by genotype, log-rank and a Cox model stratified by "
                           "hospital of a generated sickle cell disease cohort split 60/30/10 over three "
                           "hospitals (demo data, not patients).",
            "feature_groups": ["clinical", "therapy"], "model_kind": "deepsurv",
            "hyperparameters": {"local_epochs": 1}, "rounds": 3, "fraction_nodes": 1.0, "min_nodes": 2,
            "status": "ready", "datasets": datasets,
            "analysis": validate_analysis("SCD", "os", SCD_ANALYSIS)})
    else:
        study.datasets.set(datasets)
    operator = User.objects.get(username="nodeoperator")
    for ds in datasets:
        _approve_for_demo(study, ds, operator)
    echo(f"  study ready: {SCD_STUDY_TITLE} (id {study.pk})")


def _approve_for_demo(study, ds, operator) -> None:
    # The demo's node operator belongs to hospital A; the demo approves all three hospitals'
    # datasets in their name (audited as such) so the study can run at once.
    digest = study_services.settings_hash(study)
    StudyApproval.objects.update_or_create(study=study, dataset=ds,
                                           defaults={"decision": "approved", "decided_by": operator,
                                                     "comment": "approved for the demo", "settings_hash": digest})
    record(None, "study.approved", study, {"dataset": str(ds), "comment": "demo set-up", "settings_hash": digest})


def demo_serverapp_launcher() -> str:
    """The demo's ServerApp launcher: the warm prefork launcher (a run's ServerApp starts in ~0.5 s
    instead of 5-12 s, bench/README.md §8) unless FEDHAEM_SERVERAPP_PREFORK says otherwise
    (0: Flower's SuperExec)."""
    return serverapp_launcher_default() if os.environ.get(SERVERAPP_LAUNCHER_ENV, "").strip() else "prefork"


def start(sup, env: dict, base_url: str, echo=print) -> None:
    """Start the SuperLink and the three worker nodes under the demo's supervisor."""
    pki = ensure_dev_pki(settings.FLOWER_PKI_DIR)
    port = int(settings.FLOWER_CONTROL_ADDRESS.rsplit(":", 1)[1])
    handle = start_superlink(pki, Path(settings.VAR_DIR) / "logs", port=port,
                             database=Path(settings.VAR_DIR) / "superlink.db", tuning=settings.FLOWER_TUNING,
                             events_key_file=settings.RUN_EVENTS_KEY_FILE,
                             poll_interval_s=SERVERAPP_POLL_S, wait_s=90,  # a busy machine starts slowly
                             serverapp_launcher=demo_serverapp_launcher())
    sup.services.append(Service("superlink", [], proc=handle.process.popen, log_path=handle.process.log_path))
    echo(f"  started superlink on {handle.address} (TLS, SuperNode authentication)")
    prepare_node_data(echo)
    enrol_nodes()
    ensure_demo_study(echo)
    for name, _ in NODES:
        d = node_dir(name)
        sup.start(Service(f"node-{name}", [
            str(Path(sys.executable).parent / "fedhaem-node"), "start", "--manager", base_url,
            "--superlink", settings.FLOWER_FLEET_ADDRESS, "--key-dir", str(d / "keys"),
            "--data-dir", str(d / "data"), "--name", name, "--token-file", str(d / "token"),
            "--root-certificates", str(pki.ca_cert), "--heartbeat-interval", "10",
            "--state-dir", str(d / "state")] + (["--flower-tuning"] if settings.FLOWER_TUNING else ["--no-flower-tuning"]), env=env))
