"""Writes on studies and runs."""
from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from fl_engine.federation import approval as engine_approval
from fl_engine.federation import events as run_events
from fl_engine.federation.config import build_contract
from fl_engine.federation.privacy import DEFAULT_RUN_DELTA, dp_fedavg_epsilon
from fl_engine.analytics.settings import validate_analysis
from fl_engine.node import policy as node_policy
from portal.audit.services import record
from portal.core import at_rest
from portal.core.live import publish_run
from portal.datasets.models import Dataset
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import budget_problems
from portal.studies import lifecycle, tracking
from portal.studies.config import flower_privacy
from portal.studies.lifecycle import RunRefused  # noqa: F401  (the views' one refusal)
from portal.studies.models import ModelVersion, Run, Study, StudyApproval
from portal.studies.selectors import applied_policy, dataset_compatibility_errors


@transaction.atomic
def create_study(actor, data: dict) -> Study:
    datasets = data.pop("datasets", [])
    study = Study(owner=actor, organisation=getattr(actor, "organisation", None), **data)
    study.full_clean(exclude=["owner"])
    study.save()
    study.datasets.set(datasets)
    record(actor, "study.create", study)
    return study


@transaction.atomic
def update_study(actor, study: Study, data: dict) -> Study:
    """Change a study; a change to a run-relevant setting leaves its approvals stale (they no
    longer start runs) and is audited with the hospitals that must approve again."""
    before = settings_hash(study)
    datasets = data.pop("datasets", None)
    for key, value in data.items():
        setattr(study, key, value)
    study.full_clean()
    study.save()
    if datasets is not None:
        study.datasets.set(datasets)
    record(actor, "study.update", study, {"fields": sorted(data)})
    after = settings_hash(study)
    if after != before:
        stale = [str(x["dataset"]) for x in approval_state(study) if x["stale"]]
        if stale:
            record(actor, "study.approvals_stale", study, {"datasets": stale, "settings_hash": after})
    return study


@transaction.atomic
def clone_study(actor, source: Study) -> Study:
    """A new draft study with `source`'s settings and datasets, owned by `actor` (the page's
    clone action pre-fills the form with the same values)."""
    data = {f: getattr(source, f) for f in (
        "description", "use_case", "endpoint", "feature_groups", "features", "model_kind", "hyperparameters",
        "rounds", "fraction_nodes", "min_nodes", "strategy", "privacy", "analysis")}
    data.update(title=f"Copy of {source.title}"[:200], status=Study.Status.DRAFT,
                datasets=list(source.datasets.all()))
    study = create_study(actor, data)
    record(actor, "study.clone", study, {"from": source.pk})
    return study


# --- runs -----------------------------------------------------------------------------------


def run_dir(run: Run) -> Path:
    path = Path(settings.VAR_DIR) / "runs" / str(run.pk)
    path.mkdir(parents=True, exist_ok=True)
    return path


def study_settings(study: Study) -> dict:
    """The canonical approved settings of `study` (fl_engine.federation.approval)."""
    hp = dict(study.hyperparameters or {})
    local_epochs = hp.pop("local_epochs", 1)
    names = sorted({d.name for d in study.datasets.all()})
    return engine_approval.study_settings(
        use_case=study.use_case, endpoint=study.endpoint, dataset=names[0] if len(names) == 1 else ",".join(names),
        features=study.features or [], feature_groups=study.feature_groups or [], model=study.model_kind,
        model_params=hp, local_epochs=local_epochs, privacy=flower_privacy(study.privacy),
        max_rounds=study.rounds, analysis=_approved_analysis(study))


def _approved_analysis(study: Study) -> dict:
    """The study's analysis settings as an analysis run carries them (completed by the engine's
    validator), so that what a hospital approves is what the node is later asked to compute;
    the stored settings as they are when they no longer validate (such a run is refused)."""
    if not study.analysis:
        return {}
    try:
        return validate_analysis(study.use_case, study.endpoint, study.analysis)
    except ValueError:
        return dict(study.analysis)


def settings_hash(study: Study) -> str:
    return engine_approval.approval_hash(study_settings(study))


def approval_state(study: Study, purpose: str = "training") -> list[dict]:
    """Per participating dataset: {"dataset", "decision" (approved / rejected / pending), "stale"
    (approved for settings the study no longer has)}, for the study page and the start check of a
    run serving `purpose` (training, synthesis, analysis: fl_engine.node.policy.purpose_of). A
    dataset under broad consent that covers the study for that purpose is approved with "basis"
    "broad consent" and needs no decision."""
    current = settings_hash(study)
    decided = {a.dataset_id: a for a in study.approvals.select_related("decided_by")}
    out = []
    for ds in study.datasets.select_related("node", "node__organisation"):
        a = decided.get(ds.pk)
        if not a and broad_consent_covers(ds, study.use_case, purpose):
            out.append({"dataset": ds, "decision": "approved", "stale": False, "approval": None,
                        "basis": "broad consent"})
            continue
        out.append({"dataset": ds, "decision": a.decision if a else "pending",
                    "stale": bool(a and a.decision == "approved" and a.settings_hash != current),
                    "approval": a})
    return out


def broad_consent_covers(ds, use_case: str, purpose: str = "training") -> bool:
    """The policy the dataset's node applies (registered, tightened by the node's announced
    limits) is broad and allows studies of `use_case` for `purpose`, as the node checks
    (fl_engine.node.approvals; no registered policy = fine-grained)."""
    if not ds.policy or purpose not in node_policy.PURPOSES:
        return False
    p = applied_policy(ds) or {}
    return p.get("consent_scope") == "broad" and ds.use_case == use_case and purpose in p.get("purposes", [])


def run_participants(datasets) -> list[dict]:
    """The run config's participants: each dataset's node (name, Flower node id learnt at key
    registration), dataset fingerprint and version. RunRefused when a node cannot take part."""
    out, problems = [], []
    for d in datasets:
        node = d.node
        if node.status != WorkerNode.Status.APPROVED:
            problems.append(f"node {node.name} is {node.status}")
        elif not node.flower_node_id:
            problems.append(f"node {node.name} has no Flower node id yet (its key is not registered "
                            "with the SuperLink)")
        else:
            out.append({"node": node.name, "node_id": node.flower_node_id, "fingerprint": d.fingerprint,
                        "version": str(d.version)})
    if problems:
        raise RunRefused("; ".join(problems))
    return out


def check_startable(study: Study, datasets: list, purpose: str = "training") -> None:
    """RunRefused unless every dataset of `study` is approved for its current settings, or
    covered by broad consent for `purpose`."""
    state = approval_state(study, purpose)
    waiting = [str(x["dataset"]) for x in state if x["decision"] != "approved"]
    stale = [str(x["dataset"]) for x in state if x["stale"]]
    if waiting:
        raise RunRefused("awaiting the node operators' approval for: " + ", ".join(waiting))
    if stale:
        raise RunRefused("the study changed after these approvals; the hospitals must approve again: "
                         + ", ".join(stale))


def start_run(actor, study: Study, rounds: int | None = None, comparison: bool = True) -> Run:
    """Queue a run of `study` (pinning dataset versions, participants and approved settings);
    the lifecycle's start task submits it after commit. `comparison`: after the last round, the
    isolated models and conventional scores of the comparison page (reported as their own phase)."""
    datasets = list(study.datasets.select_related("node"))
    if not datasets:
        raise RunRefused("the study has no participating dataset")
    # With the study's privacy settings and the run's purpose, every policy reason the nodes would
    # give (DP required, minimum cell count, purpose, expiry) refuses the run here, with the remedy.
    problems = dataset_compatibility_errors(datasets, study.use_case, study.endpoint, study.features,
                                            study.feature_groups, privacy=flower_privacy(study.privacy),
                                            purpose=node_policy.purpose_of("survival"))
    if problems:
        raise RunRefused("; ".join(problems))
    names = {d.name for d in datasets}
    if len(names) != 1:
        raise RunRefused("every node must hold the study's dataset under one name; got " + ", ".join(sorted(names)))
    if len(datasets) < study.min_nodes:
        raise RunRefused(f"{len(datasets)} dataset(s) selected, fewer than the minimum of {study.min_nodes} nodes")
    check_startable(study, datasets, node_policy.purpose_of("survival"))
    rounds = rounds or study.rounds
    if not 1 <= rounds <= study.rounds:
        raise RunRefused(f"rounds must be between 1 and the study's approved {study.rounds}")
    privacy = flower_privacy(study.privacy)
    if privacy["dp_enabled"]:  # the nodes' reported ledgers: refuse here what a node would refuse
        over = budget_problems(datasets, dp_fedavg_epsilon(privacy["dp_noise_multiplier"], rounds, DEFAULT_RUN_DELTA),
                               DEFAULT_RUN_DELTA)
        if over:
            raise RunRefused("; ".join(over))
    participants = run_participants(datasets)
    with transaction.atomic():
        run = Run.objects.create(
            study=study, rounds=rounds, created_by=actor,
            config={
                "use_case": study.use_case, "endpoint": study.endpoint, "model": study.model_kind,
                "hyperparameters": study.hyperparameters, "features": study.features,
                "feature_groups": study.feature_groups, "rounds": rounds,
                "fraction_nodes": study.fraction_nodes, "min_nodes": study.min_nodes,
                "strategy": study.strategy, "privacy": study.privacy,
                # pinned per run: the page labels the one-phase lag of fused evaluation
                "fuse_evaluation": bool(settings.FLOWER_FUSED_EVALUATION),
                "comparison": bool(comparison),
                "datasets": [{"node": d.node.name, "name": d.name, "version": d.version,
                              "fingerprint": d.fingerprint, "patients": d.patient_count} for d in datasets],
                "participants": participants, "study_settings": study_settings(study),
            })
        record(actor, "run.start", run, {"rounds": rounds, "nodes": [p["node"] for p in participants],
                                         "comparison": bool(comparison)})
        lifecycle.dispatch(run.pk)
    publish_run(run.pk, "status", {"status": run.status})
    return run


def run_token(run: Run) -> str:
    """The bearer token of run `run`'s events (HMAC under the run-events key)."""
    return run_events.run_token(settings.RUN_EVENTS_KEY_FILE.read_bytes().strip(), run.pk)


def verify_run_token(run: Run, token: str) -> bool:
    import secrets

    return bool(token) and secrets.compare_digest(run_token(run), token)


def run_contract_sections(run: Run) -> dict:
    """The sections of run `run`'s contract (fl_engine.federation.contract), from the settings
    pinned in Run.config when it was started; generation runs override some of them."""
    c = run.config
    versions = {ds["version"] for ds in c["datasets"]}
    hp = dict(c["hyperparameters"])
    local_epochs = hp.pop("local_epochs", 1)
    return {
        "data": {"dataset": c["datasets"][0]["name"],
                 "dataset_version": str(versions.pop()) if len(versions) == 1 else "",
                 "use_case": c["use_case"], "endpoint": c["endpoint"],
                 "features": c["features"], "feature_groups": c["feature_groups"]},
        "model": {"model": c["model"], "model_params": hp, "local_epochs": local_epochs},
        "federation": {"num_rounds": run.rounds, "fraction_train": float(c["fraction_nodes"]),
                       "min_nodes": int(c["min_nodes"]), "round_timeout_s": float(settings.ROUND_TIMEOUT_S),
                       "run_timeout_s": float(settings.RUN_TIME_LIMIT_S),
                       "fuse_evaluation": bool(c.get("fuse_evaluation", settings.FLOWER_FUSED_EVALUATION)),
                       "study_id": str(run.study_id), "study_settings": c.get("study_settings") or {},
                       "participants": c.get("participants") or []},
        # runs queued before privacy options: the strict defaults
        "privacy": flower_privacy(c.get("privacy")),
        # isolated models and conventional scores for the comparison page (runs queued before the
        # switch: on)
        "analysis": {"comparison": bool(c.get("comparison", True))},
        "reporting": {"events_url": f"{settings.RUN_EVENTS_BASE_URL or settings.PORTAL_BASE_URL}"
                                    f"/api/runs/{run.pk}/events/",
                      "portal_run_id": str(run.pk)},
    }


def flower_run_config(run: Run) -> dict:
    """The nested run contract of survival run `run`, built and validated by the engine."""
    return build_contract(**run_contract_sections(run))


def conclude_survival(run: Run, files: dict[str, bytes]) -> str:
    """The conclusion hook of survival runs: the model files into the run's folder and MLflow's
    registry (once: a repeated conclusion finds the ModelVersion). "" or the reason it failed."""
    if "model.npz" not in files or "model.json" not in files:
        return "the run ended without a global model (model.npz and model.json missing from its results)"
    model_dir = run_dir(run) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in ("model.npz", "model.json"):
        at_rest.write_file(model_dir / name, files[name])  # encrypted when settings.AT_REST_ENCRYPTION
    if ModelVersion.objects.filter(run=run).exists():
        return ""
    try:
        tracking.log_run(run, model_dir)
    except IntegrityError:  # a concurrent conclusion (a redelivered task) registered it first
        return ""
    except Exception as exc:  # MLflow down must not lose the run's own record: files are kept
        logging.getLogger(__name__).exception("run %s: MLflow registration failed", run.pk)
        Run.objects.filter(pk=run.pk).update(error=f"model not registered in MLflow: {exc}"[:5000])
    return ""


def ingest_round(run: Run, round_: int, metrics: list[dict], phase: str = "round") -> bool:
    """Record one round's metrics as the run's next event (seeding and tests: the federation
    itself numbers its events, fl_engine.federation.events)."""
    seq = Run.objects.values_list("last_event_seq", flat=True).get(pk=run.pk) + 1
    return lifecycle.ingest_event(run.pk, {"seq": seq, "type": "round", "round": round_, "metrics": metrics,
                                           "phase": phase})


def cancel_run(actor, run: Run) -> Run:
    """Stop a run: the Flower run is stopped and the status becomes `cancelled`."""
    return lifecycle.cancel(actor, run)


def decide_approval(actor, study: Study, dataset, decision: str, comment: str = ""):
    """A node operator approves or rejects a study on one of their organisation's datasets; the
    decision is bound to the study's current settings (settings_hash)."""
    if dataset.node.organisation_id != getattr(actor, "organisation_id", None):
        raise RunRefused(f"{dataset} belongs to another organisation")
    if not study.datasets.filter(pk=dataset.pk).exists():
        raise RunRefused(f"{dataset} does not take part in this study")
    digest = settings_hash(study)
    approval, _ = StudyApproval.objects.update_or_create(
        study=study, dataset=dataset, defaults={"decision": decision, "decided_by": actor, "comment": comment,
                                                "settings_hash": digest})
    record(actor, f"study.{decision}", study, {"dataset": str(dataset), "comment": comment,
                                               "settings_hash": digest})
    return approval


def policies_for_node(node) -> list[dict]:
    """The registered policies of `node`'s datasets, as the node fetches them with its approvals
    (fl_engine.node.approvals): unregistered datasets are absent (the node applies the default)."""
    return [{"dataset": d.name, "version": str(d.version), "fingerprint": d.fingerprint, "use_case": d.use_case,
             "policy": d.policy} for d in Dataset.objects.filter(node=node, policy__isnull=False)]


def approvals_for_node(node) -> list[dict]:
    """What worker node `node` may serve: its datasets' current approvals with the settings
    they are bound to (the node's own check compares runs against these)."""
    rows = (StudyApproval.objects.filter(dataset__node=node, decision="approved")
            .exclude(settings_hash="").select_related("dataset"))
    return [{"study": str(a.study_id), "dataset": a.dataset.name, "version": str(a.dataset.version),
             "fingerprint": a.dataset.fingerprint, "settings_hash": a.settings_hash} for a in rows]


# --- model registry -------------------------------------------------------------------------

def model_files(mv):
    """Folder of a registered model's files on this portal (model.npz, model.json), or None."""
    d = run_dir(mv.run) / "model"
    return d if d.is_dir() and any(d.iterdir()) else None


def model_archive(actor, mv) -> tuple[str, bytes] | None:
    """(file name, zip bytes) of the model's files, audited as `model.download`; None when the
    files are not stored on this portal (see MLflow). The caller checks the actor may see `mv`."""
    import io
    import zipfile

    folder = model_files(mv)
    if folder is None:
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.writestr(str(path.relative_to(folder)), at_rest.read_file(path))
    # which version was taken, and under which aliases at that moment (aliases move later)
    record(actor, "model.download", mv, {"registered_model": mv.registered_model_name, "version": mv.version,
                                         "aliases": sorted(mv.aliases.values_list("alias", flat=True))})
    return f"{mv.registered_model_name}-v{mv.version}.zip", buf.getvalue()
