"""Writes on studies and runs."""
from __future__ import annotations

from django.db import transaction

from portal.audit.services import record
from portal.studies.models import Study


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
    datasets = data.pop("datasets", None)
    for key, value in data.items():
        setattr(study, key, value)
    study.full_clean()
    study.save()
    if datasets is not None:
        study.datasets.set(datasets)
    record(actor, "study.update", study, {"fields": sorted(data)})
    return study


@transaction.atomic
def clone_study(actor, source: Study) -> Study:
    """A new draft study with `source`'s settings and datasets, owned by `actor` (the page's
    clone action pre-fills the form with the same values)."""
    data = {f: getattr(source, f) for f in (
        "description", "use_case", "endpoint", "feature_groups", "features", "model_kind", "hyperparameters",
        "rounds", "fraction_nodes", "min_nodes", "strategy", "privacy")}
    data.update(title=f"Copy of {source.title}"[:200], status=Study.Status.DRAFT,
                datasets=list(source.datasets.all()))
    study = create_study(actor, data)
    record(actor, "study.clone", study, {"from": source.pk})
    return study


# --- runs -----------------------------------------------------------------------------------

import hashlib  # noqa: E402
import secrets  # noqa: E402
from pathlib import Path  # noqa: E402

from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from portal.core.live import publish_run  # noqa: E402
from portal.studies.models import RoundMetric, Run  # noqa: E402


class RunRefused(Exception):
    """The run cannot start or change state; the message says why."""


def run_dir(run: Run) -> Path:
    path = Path(settings.VAR_DIR) / "runs" / str(run.pk)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_run(actor, study: Study, rounds: int | None = None) -> Run:
    """Queue a run of `study` (pinning dataset versions); the Celery task starts it after commit."""
    from portal.studies.selectors import dataset_compatibility_errors

    datasets = list(study.datasets.select_related("node"))
    if not datasets:
        raise RunRefused("the study has no participating dataset")
    problems = dataset_compatibility_errors(datasets, study.use_case, study.endpoint, study.features,
                                            study.feature_groups)
    if problems:
        raise RunRefused("; ".join(problems))
    names = {d.name for d in datasets}
    if len(names) != 1:
        raise RunRefused("every node must hold the study's dataset under one name; got " + ", ".join(sorted(names)))
    if len(datasets) < study.min_nodes:
        raise RunRefused(f"{len(datasets)} dataset(s) selected, fewer than the minimum of {study.min_nodes} nodes")
    approved = set(study.approvals.filter(decision="approved").values_list("dataset_id", flat=True))
    waiting = [d for d in datasets if d.pk not in approved]
    if waiting:
        raise RunRefused("awaiting the node operators' approval for: " + ", ".join(str(d) for d in waiting))
    rounds = rounds or study.rounds
    if not 1 <= rounds <= 500:
        raise RunRefused("rounds must be between 1 and 500")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        run = Run.objects.create(
            study=study, rounds=rounds, created_by=actor, metrics_token_hash=_hash(token),
            config={
                "use_case": study.use_case, "endpoint": study.endpoint, "model": study.model_kind,
                "hyperparameters": study.hyperparameters, "features": study.features,
                "feature_groups": study.feature_groups, "rounds": rounds,
                "fraction_nodes": study.fraction_nodes, "min_nodes": study.min_nodes,
                "strategy": study.strategy, "privacy": study.privacy,
                # pinned per run: the page labels the one-phase lag of fused evaluation
                "fuse_evaluation": bool(settings.FLOWER_FUSED_EVALUATION),
                "datasets": [{"node": d.node.name, "name": d.name, "version": d.version,
                              "fingerprint": d.fingerprint, "patients": d.patient_count} for d in datasets],
            })
        token_file = run_dir(run) / "metrics.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        record(actor, "run.start", run, {"rounds": rounds})
        from portal.studies import tasks

        transaction.on_commit(lambda: tasks.execute_run.delay(run.pk))
    publish_run(run.pk, "status", {"status": run.status})
    return run


def verify_metrics_token(run: Run, token: str) -> bool:
    return bool(run.metrics_token_hash) and secrets.compare_digest(run.metrics_token_hash, _hash(token))


def flower_run_config(run: Run) -> dict:
    """The Flower run config of a portal run (flat values, as `fl_engine.federation.config`)."""
    import json

    from portal.studies.config import flower_privacy

    c = run.config
    d = run_dir(run)
    versions = {ds["version"] for ds in c["datasets"]}
    hp = dict(c["hyperparameters"])
    local_epochs = hp.pop("local_epochs", 1)
    return {
        "dataset": c["datasets"][0]["name"],
        "dataset_version": str(versions.pop()) if len(versions) == 1 else "",
        "use_case": c["use_case"], "endpoint": c["endpoint"], "model": c["model"],
        "model_params": json.dumps(hp, sort_keys=True),
        "features": ",".join(c["features"]), "feature_groups": ",".join(c["feature_groups"]),
        "num_rounds": run.rounds, "local_epochs": local_epochs,
        "fraction_train": float(c["fraction_nodes"]), "min_nodes": int(c["min_nodes"]),
        "round_timeout_s": float(settings.ROUND_TIMEOUT_S), "run_timeout_s": float(settings.RUN_TIME_LIMIT_S),
        "fuse_evaluation": bool(c.get("fuse_evaluation", settings.FLOWER_FUSED_EVALUATION)),
        "comparison": True,  # isolated models and conventional scores for the comparison page
        **flower_privacy(c.get("privacy")),  # runs queued before privacy options: the strict defaults
        "metrics_path": str(d / "metrics.jsonl"),
        "metrics_url": f"{settings.PORTAL_BASE_URL}/api/runs/{run.pk}/metrics/",
        "metrics_token_file": str(d / "metrics.token"),
        "portal_run_id": str(run.pk),
        "model_dir": str(d / "model"),
    }


def set_status(run: Run, status: str, error: str = "", **fields) -> Run:
    """Move a run to `status` (never out of a final state) and tell the watchers."""
    final = {Run.Status.FINISHED, Run.Status.FAILED, Run.Status.CANCELLED}
    with transaction.atomic():
        current = Run.objects.select_for_update().get(pk=run.pk)
        if current.status in final:
            return current
        current.status = status
        if error:
            current.error = error[:5000]
        if status == Run.Status.RUNNING and current.started_at is None:
            current.started_at = timezone.now()
        if status in final:
            current.finished_at = timezone.now()
        for k, v in fields.items():
            setattr(current, k, v)
        current.save()
    publish_run(run.pk, "status", {"status": current.status, "error": current.error})
    return current


def cancel_run(actor, run: Run) -> Run:
    """Stop a run: the Flower run is stopped and the status becomes `cancelled`."""
    from portal.studies import flower_adapter

    if not run.active:
        raise RunRefused(f"run {run.pk} is already {run.status}")
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    run.refresh_from_db()
    stop_error = ""
    if run.flower_run_id:
        try:
            flower_adapter.stop_run(run.flower_run_id)
        except flower_adapter.FlowerUnavailable as exc:
            stop_error = f" (the SuperLink said: {exc})"
    record(actor, "run.cancel", run)
    return set_status(run, Run.Status.CANCELLED, error=f"cancelled by {actor.username}{stop_error}")


def ingest_round(run: Run, round_: int, metrics: list[dict], phase: str = "round") -> int:
    """Store one round's metrics (idempotent) and publish them (event `round`, or `comparison`
    for the isolated/conventional figures added to the last round); returns how many were new."""
    new = 0
    for m in metrics:
        value = m.get("value")
        if value is None:
            continue
        _, created = RoundMetric.objects.update_or_create(
            run=run, round=round_, node=str(m["node"])[:60], name=str(m["name"])[:40],
            defaults={"value": float(value)})
        new += created
    if new:
        publish_run(run.pk, "round" if phase == "round" else phase,
                    {"round": round_, "rounds": run.rounds,
                     "metrics": [m for m in metrics if m.get("value") is not None]})
        if run.status in (Run.Status.QUEUED, Run.Status.STARTING):
            set_status(run, Run.Status.RUNNING)
    return new


def ingest_metrics_file(run: Run) -> int:
    """Bridge: read the run's JSON-lines metrics file and store rounds not stored yet."""
    import json

    path = run_dir(run) / "metrics.jsonl"
    if not path.exists():
        return 0
    new = 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if "round" in rec:
            new += ingest_round(run, int(rec["round"]), rec.get("metrics", []), rec.get("phase", "round"))
    return new


def decide_approval(actor, study: Study, dataset, decision: str, comment: str = ""):
    """A node operator approves or rejects a study on one of their organisation's datasets."""
    from portal.studies.models import StudyApproval

    if dataset.node.organisation_id != getattr(actor, "organisation_id", None):
        raise RunRefused(f"{dataset} belongs to another organisation")
    if not study.datasets.filter(pk=dataset.pk).exists():
        raise RunRefused(f"{dataset} does not take part in this study")
    approval, _ = StudyApproval.objects.update_or_create(
        study=study, dataset=dataset, defaults={"decision": decision, "decided_by": actor, "comment": comment})
    record(actor, f"study.{decision}", study, {"dataset": str(dataset), "comment": comment})
    return approval


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
                zf.write(path, path.relative_to(folder))
    record(actor, "model.download", mv)
    return f"{mv.registered_model_name}-v{mv.version}.zip", buf.getvalue()
