"""Writes on synthetic cohorts: release through the privacy gate, downloads (both audited)."""
from __future__ import annotations

import dataclasses
import logging

from django.db import transaction
from django.utils import timezone

from fedhaem_kernel.atrest import AtRestError
from fl_engine.federation.config import build_contract, parse_run_config
from fl_engine.federation.contract import bounds as contract_setting
from generative import build_data_card
from portal.audit.services import record
from portal.core.live import publish_run
from portal.studies import lifecycle
from portal.studies import services as study_services
from portal.studies.config import flower_privacy
from portal.studies.models import Run
from portal.studies.selectors import dataset_compatibility_errors
from portal.synthesis.models import SyntheticCohort



# Bounds of a generation run's settings: the engine's spec (fl_engine.federation.contract), with
# fewer rounds than a survival study may have.
LOCAL_EPOCHS = contract_setting("local_epochs")
ROWS = contract_setting("synth_rows")
ROUNDS = dataclasses.replace(contract_setting("num_rounds"), hi=200)

class CohortRefused(Exception):
    """The cohort cannot be released or downloaded; the message says why."""


def gate_passed(cohort: SyntheticCohort) -> bool:
    """True when the SAFE validation report says the privacy gate passed."""
    report = cohort.validation_report or {}
    gate = report.get("gate", report)
    if isinstance(gate, dict):
        for key in ("passed", "released", "ok"):
            if key in gate:
                return bool(gate[key])
    return False


@transaction.atomic
def release_cohort(actor, cohort: SyntheticCohort) -> SyntheticCohort:
    """Mark a cohort downloadable; refused unless its validation report passed the gate."""
    cohort = SyntheticCohort.objects.select_for_update().get(pk=cohort.pk)
    if cohort.released:
        raise CohortRefused(f"{cohort} is already released")
    if not gate_passed(cohort):
        raise CohortRefused(f"{cohort} did not pass the privacy gate; it cannot be released")
    cohort.released = True
    cohort.released_at = timezone.now()
    cohort.save(update_fields=["released", "released_at"])
    record(actor, "cohort.release", cohort)
    return cohort


def open_for_download(actor, cohort: SyntheticCohort):
    """The cohort's file opened for reading, after checking role and release; audited both ways."""
    handle = _checked_file(actor, cohort)
    record(actor, "cohort.download", cohort, {"rows": cohort.row_count, "format": "csv"})
    return handle


def _checked_file(actor, cohort: SyntheticCohort):
    """Role and release checks (refusals audited), then the stored file opened for reading."""
    if not actor.has_perm("synthesis.download_syntheticcohort"):
        record(actor, "cohort.download_refused", cohort, {"reason": "role"})
        raise CohortRefused("your role does not allow downloading synthetic cohorts")
    if not cohort.released:
        record(actor, "cohort.download_refused", cohort, {"reason": "not released"})
        raise CohortRefused(f"{cohort} has not been released: it has not passed the privacy gate")
    if not cohort.file:
        raise CohortRefused(f"{cohort} has no file stored")
    try:
        handle = cohort.file.open("rb")
    except FileNotFoundError:
        raise CohortRefused(f"the file of {cohort} is missing from storage") from None
    except AtRestError as exc:  # tampered, truncated, unknown key, or plaintext not yet migrated
        logging.getLogger(__name__).error("cohort %s: %s", cohort.pk, exc)
        raise CohortRefused(f"the stored file of {cohort} cannot be decrypted ({exc.reason}); "
                            "an administrator must look at it") from None
    return handle


# --- generation runs -------------------------------------------------------------------------
# A generation run is a studies.Run with kind "synthesis": it goes through the same Celery task,
# SuperLink, metrics endpoint and websocket as a survival run; when it finishes, the cohort it
# wrote is stored as a SyntheticCohort (not released: release goes through the gate above).

GENERATORS = ("vae_bgm", "bayesian_network", "ctgan", "sd_sharing")
ONE_ROUND = ("bayesian_network", "sd_sharing")  # the engine runs one round whatever was asked
START_PERMS = ("studies.add_run", "synthesis.add_syntheticcohort")  # the coordinator role


class GenerationRefused(Exception):
    """A generation run cannot start; `field` names the bad input when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def can_start_generation(user) -> bool:
    return all(user.has_perm(p) for p in START_PERMS)


def generation_columns(study, features: list[str] | None) -> list[str]:
    """Generated feature columns: the given ones, else the engine's default for the use case."""
    from fl_engine.federation.synthesis import synthesis_columns  # torch: this module loads it

    cfg = parse_run_config({"use_case": study.use_case, "endpoint": study.endpoint,
                            "features": ",".join(features or [])})
    return synthesis_columns(cfg)


def start_generation_run(actor, study, *, generator: str, rounds: int, local_epochs: int,
                         rows: int = 0, generator_params: dict | None = None,
                         features: list[str] | None = None):
    """Queue a synthetic-cohort generation run of `study` over its approved datasets; the
    run lifecycle (portal.studies.lifecycle) submits it after commit. Raises
    GenerationRefused (with the field when an input is bad); nothing is stored then."""
    from fl_engine.federation.synthesis import generator_hyper  # torch: this module loads it

    if not can_start_generation(actor):
        raise GenerationRefused("your role does not allow starting a generation run (study coordinators only)")
    if generator not in GENERATORS:
        raise GenerationRefused(f"generator {generator!r} is not one of {', '.join(GENERATORS)}", "generator")
    for field, setting, value in (("rounds", ROUNDS, rounds), ("local_epochs", LOCAL_EPOCHS, local_epochs),
                                  ("rows", ROWS, rows)):
        why = setting.check(int(value))
        if why:
            raise GenerationRefused(f"{field} {why}" + (" (0 = as many as training patients)" if field == "rows" else ""),
                                    field)
    if generator in ONE_ROUND:
        rounds = 1  # the run page counts rounds against this: "1 of 1", not "1 of 5" forever
    try:
        params = generator_hyper(generator, dict(generator_params or {}))
    except ValueError as exc:
        raise GenerationRefused(str(exc), "generator_params") from None
    try:
        columns = generation_columns(study, features)
    except ValueError as exc:
        raise GenerationRefused(str(exc), "features") from None
    datasets = list(study.datasets.select_related("node"))
    if not datasets:
        raise GenerationRefused("the study has no participating dataset")
    # the study's privacy settings and this run's purpose: every policy reason the nodes would give
    # (purpose not allowed, minimum cell count, expiry) refuses the run here, with the remedy
    problems = dataset_compatibility_errors(datasets, study.use_case, study.endpoint, columns, [],
                                            privacy=flower_privacy(study.privacy), purpose="synthesis")
    if problems:
        raise GenerationRefused("; ".join(problems))
    if len({d.name for d in datasets}) != 1:
        raise GenerationRefused("every node must hold the study's dataset under one name")
    if len(datasets) < study.min_nodes:
        raise GenerationRefused(f"{len(datasets)} dataset(s) selected, fewer than the minimum of {study.min_nodes} nodes")
    try:
        study_services.check_startable(study, datasets, "synthesis")
        participants = study_services.run_participants(datasets)
    except study_services.RunRefused as exc:
        raise GenerationRefused(str(exc)) from None
    if int(rounds) > study.rounds:
        raise GenerationRefused(f"rounds must be at most the study's approved {study.rounds}", "rounds")
    generation = {"generator": generator, "generator_params": params, "local_epochs": int(local_epochs),
                  "rows": int(rows), "features": columns}
    with transaction.atomic():
        run = Run.objects.create(
            study=study, kind=Run.Kind.SYNTHESIS, rounds=int(rounds), created_by=actor,
            config={
                # the keys of a survival run's snapshot (flower_run_config reads them) + generation
                "use_case": study.use_case, "endpoint": study.endpoint, "model": study.model_kind,
                "hyperparameters": {"local_epochs": int(local_epochs)}, "features": columns,
                "feature_groups": [], "rounds": int(rounds), "fraction_nodes": 1.0,
                "min_nodes": study.min_nodes, "strategy": study.strategy,
                "datasets": [{"node": d.node.name, "name": d.name, "version": d.version,
                              "fingerprint": d.fingerprint, "patients": d.patient_count} for d in datasets],
                "generation": generation,
                "participants": participants, "study_settings": study_services.study_settings(study),
                "privacy": study.privacy,
            })
        record(actor, "run.start_generation", run, {"rounds": int(rounds), **generation,
                                                    "nodes": [p["node"] for p in participants]})
        lifecycle.dispatch(run.pk)
    publish_run(run.pk, "status", {"status": run.status})
    return run


def flower_generation_config(run) -> dict:
    """The nested run contract of a generation run: a survival run's sections (dataset, timeouts,
    events endpoint, node privacy options) with the synthesis task and generator on top."""
    g = run.config["generation"]
    sections = study_services.run_contract_sections(run)
    sections["data"].update(features=g["features"], feature_groups=[])
    sections["model"] = {"local_epochs": int(g["local_epochs"])}
    sections["federation"].update(fraction_train=1.0, fuse_evaluation=False)
    sections["synthesis"] = {"task": "synthesis", "generator": g["generator"],
                             "generator_params": g["generator_params"], "synth_rows": int(g["rows"])}
    sections.pop("analysis")  # the comparison is a survival-only phase
    return build_contract(**sections)


def conclude_generation_files(run, files: dict[str, bytes]) -> str:
    """The conclusion hook of generation runs: "" once the cohort is stored, else the reason."""
    try:
        conclude_generation(run, files)
    except CohortRefused as exc:
        return str(exc)
    return ""


def conclude_generation(run, files: dict[str, bytes]) -> SyntheticCohort:
    """Store the cohort a finished generation run produced (its synthetic.csv and
    synthesis.json) as a SyntheticCohort with its SAFE report, gate and data card; not released.
    Raises CohortRefused when the files are missing or malformed. Safe to repeat."""
    import json

    from django.core.files.base import ContentFile

    existing = SyntheticCohort.objects.filter(run=run).first()
    if existing is not None:  # a redelivered conclusion (the files may be gone from the event by now)
        return existing
    try:
        meta = json.loads(files["synthesis.json"].decode())
        csv = files["synthetic.csv"]
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CohortRefused(f"run {run.pk} ended without a readable synthetic cohort: {exc!r}") from None
    report = meta.get("report") or {}
    gate = meta.get("gate") or {}
    if not isinstance(report, dict) or not isinstance(gate, dict) or "checks" not in gate:
        raise CohortRefused(f"run {run.pk}: synthesis.json lacks the validation report or the gate")
    n_rows = int(meta.get("n_rows", 0))
    card = build_data_card(generator=meta["generator"], generator_params=meta.get("generator_params", {}),
                           study=run.study.title, run=run.pk, rounds=meta.get("num_rounds"), report=report,
                           gate=gate, n_rows=n_rows,
                           extra={"use_case": meta.get("use_case"), "endpoint": meta.get("endpoint"),
                                  "columns": [c["name"] for c in meta.get("spec", {}).get("columns", [])],
                                  "local_epochs": meta.get("local_epochs"),
                                  "nodes": meta.get("nodes", [])})
    with transaction.atomic():
        existing = SyntheticCohort.objects.filter(run=run).first()
        if existing is not None:  # the task may conclude twice after a worker restart
            return existing
        cohort = SyntheticCohort(run=run, generator=meta["generator"], row_count=n_rows,
                                 validation_report={**report, "gate": gate}, data_card=card)
        cohort.file.save(f"run-{run.pk}-{meta['generator']}.csv", ContentFile(csv), save=False)
        cohort.save()
        record(None, "cohort.create", cohort, {"run": run.pk, "rows": n_rows, "gate_passed": bool(gate.get("passed"))})
    return cohort


def parquet_bytes(cohort: SyntheticCohort) -> bytes:
    """The cohort as Parquet (pyarrow), its data card in the file's key-value metadata
    ("fedhaem.data_card", JSON). Raises CohortRefused when pyarrow or the file is missing."""
    import io
    import json

    import pandas as pd
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CohortRefused("Parquet export needs pyarrow, which is not installed; download the CSV") from None
    with cohort.file.open("rb") as f:
        df = pd.read_csv(f)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"fedhaem.data_card"] = json.dumps(cohort.data_card or {}, default=str).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    return buf.getvalue()


def download_parquet(actor, cohort: SyntheticCohort) -> bytes:
    """Parquet bytes after the same role and release checks as the CSV download; audited."""
    _checked_file(actor, cohort).close()  # role and release checks, refusals audited
    try:
        data = parquet_bytes(cohort)
    except CohortRefused:
        raise
    except Exception as exc:  # a malformed stored file: say so, do not 500
        raise CohortRefused(f"the file of {cohort} could not be converted to Parquet: {exc}") from None
    record(actor, "cohort.download", cohort, {"rows": cohort.row_count, "format": "parquet"})
    return data
