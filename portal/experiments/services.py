"""Writes on experiment grids: start (every option validated, audited, queued after commit),
execute (the body of the Celery task), cancel.

The grid pools patients in one place (a centralised model is one of its settings), so on the
manager it runs only on data the manager may hold: the project's generated MDS cohort, or a
synthetic cohort of the same study that passed the privacy gate and was released. Never real
hospital data: a hospital runs the same grid on its own data with ``python -m
fl_engine.experiments.grid``."""
from __future__ import annotations

import logging
import math

from django.db import transaction
from django.utils import timezone

from fedhaem_kernel.schema import get_schema
from fl_engine.cohort import generate_mds_cohort
from fl_engine.experiments.grid import DEFAULT_GROUPS, GridConfig, km_panels, run_grid, summarise, usable_rows
from portal.audit.services import record
from portal.core.db import retry_on_lock
from portal.core.live import publish_grid
from portal.experiments.models import GridRun
from portal.studies import lifecycle
from portal.studies.config import validate_hyperparameters
from portal.synthesis.models import SyntheticCohort

log = logging.getLogger(__name__)

START_PERM = "studies.add_run"  # the permission that starts runs on a study (coordinators)
CANCEL_PERM = "studies.cancel_run"
MODELS = ("deepsurv", "savae", "cox")  # every grid also trains the Cox baseline
FEDERATIONS = (3, 5)
CASES = ("best", "worst")
# option -> (lowest, highest, default)
LIMITS = {"seeds": (1, 5, 3), "rounds": (2, 30, 10), "n_boot": (0, 1000, 200),
          "n": (300, 20_000, 2000), "seed": (0, 2**31 - 1, 0)}
MIN_SYNTHETIC_ROWS = 300  # below this, a 5-node split leaves nodes with one or two test patients
GRID_TIME_LIMIT_S = 6 * 3600
GRID_HEARTBEAT_S = 10     # the worker computing a grid says it is alive this often
GRID_STALE_S = 60         # silent this long: its worker is gone, another takes the grid over
GRID_DEAD_S = 600         # silent this long: failed when the study starts its next grid
GRID_MAX_ATTEMPTS = 3     # workers that may take a grid up before it is failed

PER_SEED_COLUMNS = ["seed", "setting", "case", "eval", "trained_on", "rounds_used", "n", "n_events",
                    "harrell_c", "harrell_lo", "harrell_hi", "antolini_c", "uno_c", "ibs", "ibs_km",
                    "n_total", "coverage", "coverage_ok", "note"]
SUMMARY_KEYS = {"setting": "setting", "case": "case", "eval": "eval", "trained_on": "trained_on",
                "seeds": "seeds", "n": "n", "harrell_c": "harrell_c", "lo": "harrell_lo", "hi": "harrell_hi",
                "sd": "harrell_sd", "antolini": "antolini_c", "uno": "uno_c", "ibs": "ibs", "ibs_km": "ibs_km",
                "rounds_used": "rounds_used", "n_total": "n_total", "coverage": "coverage",
                "coverage_min": "coverage_min", "coverage_ok": "coverage_ok"}


class GridRefused(Exception):
    """The grid cannot start or change state; `field` names the bad option when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class GridForbidden(GridRefused):
    """The actor's role does not allow this."""


class GridCancelled(Exception):
    """Raised by the grid's log callback when a cancellation was requested."""


def can_start_grid(user) -> bool:
    return user.has_perm(START_PERM)


def can_cancel_grid(user) -> bool:
    return user.has_perm(CANCEL_PERM)


# --- start ----------------------------------------------------------------------------------

def _int(name: str, value) -> int:
    lo, hi, _ = LIMITS[name]
    if isinstance(value, bool):
        raise GridRefused(f"{name} must be a whole number, not {value!r}", name)
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise GridRefused(f"{name} must be a whole number, not {value!r}", name) from None
    if v != value and not isinstance(value, str):
        raise GridRefused(f"{name} must be a whole number, not {value!r}", name)
    if not lo <= v <= hi:
        raise GridRefused(f"{name} must be between {lo} and {hi}, not {v}", name)
    return v


def _subset(name: str, values, allowed: tuple, cast) -> list:
    if isinstance(values, (str, int)) or values is None:
        values = [values]
    try:
        chosen = {cast(v) for v in values}
    except (TypeError, ValueError):
        raise GridRefused(f"{name}: {list(values)!r} is not a subset of {list(allowed)}", name) from None
    if not chosen:
        raise GridRefused(f"{name}: choose at least one of {', '.join(map(str, allowed))}", name)
    bad = sorted(map(str, chosen - set(allowed)))
    if bad:
        raise GridRefused(f"{name}: {', '.join(bad)} not one of {', '.join(map(str, allowed))}", name)
    return [a for a in allowed if a in chosen]


def _endpoint_columns(study) -> tuple[str, str]:
    try:
        ep = get_schema(study.use_case).endpoint(study.endpoint)
    except (KeyError, ValueError):
        raise GridRefused(f"the study's use case {study.use_case} / endpoint {study.endpoint!r} has no "
                          "schema the grid knows") from None
    return ep.time_column, ep.event_column


def _feature_groups(study) -> tuple[str, ...]:
    """The study's feature groups when they map onto the grid (groups of the use-case schema, no
    explicit feature list, no embeddings); else the grid's defaults."""
    groups = list(study.feature_groups or [])
    known = set(get_schema(study.use_case).groups) - {"embedding"}
    if groups and not study.features and all(g in known for g in groups):
        return tuple(groups)
    return DEFAULT_GROUPS


def _model_params(study, model: str) -> tuple[dict, int]:
    """(model parameters, local epochs): the study's hyper-parameters when the grid uses the
    study's model, else the portal's defaults for that model (portal.studies.config)."""
    try:
        params = validate_hyperparameters(model, study.hyperparameters if model == study.model_kind else {})
    except ValueError:
        params = validate_hyperparameters(model, {})
    local_epochs = int(params.pop("local_epochs", 1))
    if model == "savae":
        params.setdefault("time_scale", 24.0)  # months: as the grid's command line
    return params, local_epochs


def _cohort_columns(cohort) -> list[str]:
    import pandas as pd

    if not cohort.file:
        raise GridRefused(f"synthetic cohort #{cohort.pk} has no file stored", "synthetic_cohort")
    try:
        with cohort.file.open("rb") as f:
            if cohort.file.name.endswith(".parquet"):
                import pyarrow.parquet as pq
                return list(pq.read_schema(f).names)
            return list(pd.read_csv(f, nrows=0).columns)
    except FileNotFoundError:
        raise GridRefused(f"the file of synthetic cohort #{cohort.pk} is missing from storage",
                          "synthetic_cohort") from None
    except Exception as exc:  # a malformed stored file: say so, do not 500
        raise GridRefused(f"the file of synthetic cohort #{cohort.pk} cannot be read: {exc}",
                          "synthetic_cohort") from None


def _synthetic_cohort(study, cohort_id):
    if cohort_id is None or cohort_id == "":
        raise GridRefused("choose a released synthetic cohort of the study", "synthetic_cohort")
    if isinstance(cohort_id, SyntheticCohort):
        cohort_id = cohort_id.pk
    if isinstance(cohort_id, bool):
        raise GridRefused(f"synthetic_cohort must be a cohort id, not {cohort_id!r}", "synthetic_cohort")
    try:
        cohort_id = int(cohort_id)
    except (TypeError, ValueError):
        raise GridRefused(f"synthetic_cohort must be a cohort id, not {cohort_id!r}", "synthetic_cohort") from None
    cohort = SyntheticCohort.objects.select_related("run").filter(pk=cohort_id).first()
    if cohort is None:
        raise GridRefused(f"there is no synthetic cohort #{cohort_id}", "synthetic_cohort")
    if cohort.run.study_id != study.pk:
        raise GridRefused(f"synthetic cohort #{cohort.pk} belongs to another study (study #{cohort.run.study_id}), "
                          f"not to study #{study.pk}", "synthetic_cohort")
    if not cohort.released:
        raise GridRefused(f"synthetic cohort #{cohort.pk} has not been released: only a cohort that passed the "
                          "privacy gate and was released may be pooled on the manager", "synthetic_cohort")
    if cohort.row_count < MIN_SYNTHETIC_ROWS:
        raise GridRefused(f"synthetic cohort #{cohort.pk} has {cohort.row_count} rows; the grid needs at least "
                          f"{MIN_SYNTHETIC_ROWS}", "synthetic_cohort")
    time_col, event_col = _endpoint_columns(study)
    present = set(_cohort_columns(cohort))
    missing = [c for c in (time_col, event_col) if c not in present]
    if missing:
        raise GridRefused(f"synthetic cohort #{cohort.pk} lacks the study endpoint's ({study.endpoint}) "
                          f"column(s) {', '.join(missing)}", "synthetic_cohort")
    return cohort


def start_grid(actor, study, *, source: str = "generated", synthetic_cohort=None, n=LIMITS["n"][2],
               seed=LIMITS["seed"][2], model: str | None = None, seeds=LIMITS["seeds"][2],
               rounds=LIMITS["rounds"][2], federations=FEDERATIONS, cases=CASES, isolated: bool = True,
               n_boot=LIMITS["n_boot"][2]) -> GridRun:
    """Queue a grid on `study`'s pooled-data source; the Celery task (portal.experiments.tasks)
    runs it after commit. Raises GridRefused naming the bad option (GridForbidden for the role);
    nothing is stored then."""
    if not can_start_grid(actor):
        raise GridForbidden("your role does not allow starting an experiment grid (study coordinators only)")
    if source not in GridRun.Source.values:
        raise GridRefused(f"source {source!r} is not one of {', '.join(GridRun.Source.values)}", "source")
    model = study.model_kind if model in (None, "") else model
    if model not in MODELS:
        raise GridRefused(f"model {model!r} is not one of {', '.join(MODELS)}", "model")
    seeds, rounds, n_boot = _int("seeds", seeds), _int("rounds", rounds), _int("n_boot", n_boot)
    federations = _subset("federations", federations, FEDERATIONS, int)
    cases = _subset("cases", cases, CASES, str)
    if not isinstance(isolated, bool):
        raise GridRefused(f"isolated must be true or false, not {isolated!r}", "isolated")
    time_col, event_col = _endpoint_columns(study)
    cohort, gen_n, gen_seed = None, None, None
    if source == GridRun.Source.GENERATED:
        if study.use_case != "MDS":
            raise GridRefused(f"the generated cohort is MDS only; this study is {study.use_case}: choose a "
                              "released synthetic cohort of the study", "source")
        if synthetic_cohort not in (None, ""):
            raise GridRefused("synthetic_cohort goes with source \"synthetic\" only", "synthetic_cohort")
        gen_n, gen_seed = _int("n", n), _int("seed", seed)
    else:
        cohort = _synthetic_cohort(study, synthetic_cohort)
    expire_stale(study)
    if GridRun.objects.filter(study=study, status__in=GridRun.ACTIVE).exists():
        raise GridRefused("a grid of this study is already queued or running; wait for it or cancel it")
    params, local_epochs = _model_params(study, model)
    config = {"use_case": study.use_case, "endpoint": study.endpoint, "time_column": time_col,
              "event_column": event_col, "model": model, "model_params": params, "local_epochs": local_epochs,
              "feature_groups": list(_feature_groups(study)), "seeds": seeds, "rounds": rounds,
              "federations": federations, "cases": cases, "isolated": isolated, "n_boot": n_boot}
    with transaction.atomic():
        grid = GridRun.objects.create(study=study, source=source, synthetic_cohort=cohort, generated_n=gen_n,
                                      generated_seed=gen_seed, config=config, created_by=actor)
        record(actor, "grid.start", grid, {"source": source, "synthetic_cohort": cohort.pk if cohort else None,
                                           "generated_n": gen_n, "generated_seed": gen_seed, **config})
        from portal.experiments import tasks  # cycle: portal.experiments.tasks imports this module

        transaction.on_commit(lambda: tasks.execute_grid.delay(grid.pk))
    return grid


def _publish_status(g: GridRun) -> None:
    publish_grid(g.pk, "status", {"status": g.status, "cancel_requested": g.cancel_requested, "error": g.error})


def move(grid_id: int, to: str, *, error: str = "", from_: tuple[str, ...] | None = None, **fields) -> GridRun | None:
    """The run lifecycle's one state machine (portal.studies.lifecycle.move) for a grid, then its
    viewers are told. None when another writer moved it first or the move is not allowed."""
    g = lifecycle.move(GridRun, grid_id, to, error=error, from_=from_, **fields)
    if g is not None:
        _publish_status(g)
    return g


def _silent_for(g: GridRun, now) -> float:
    """Seconds since the worker computing grid `g` last said it is alive (since it started
    when it never did)."""
    seen = g.heartbeat_at or g.status_changed_at or g.started_at or g.created_at
    return (now - seen).total_seconds()


def expire_stale(study) -> int:
    """Grids of `study` whose worker stopped long ago (no heartbeat for GRID_DEAD_S, or past the
    task's hard time limit) are failed with the reason, so that they do not block the study's
    next grid. Returns how many."""
    from datetime import timedelta

    now = timezone.now()
    n = 0
    for g in GridRun.objects.filter(study=study, status__in=GridRun.ACTIVE).exclude(status=GridRun.Status.QUEUED):
        if _silent_for(g, now) > GRID_DEAD_S or (g.started_at and g.started_at < now - timedelta(seconds=GRID_TIME_LIMIT_S + 600)):
            n += move(g.pk, GridRun.Status.FAILED,
                      error=f"the grid's task stopped without a result (no sign of its worker for "
                            f"{_silent_for(g, now):.0f} s)") is not None
    return n


def cancel_grid(actor, grid: GridRun) -> GridRun:
    """A queued grid is cancelled at once; a starting or running one stops at the next setting
    boundary (at once when its worker is gone); a grid storing its results cannot be cancelled."""
    if not can_cancel_grid(actor):
        raise GridForbidden("your role does not allow cancelling an experiment grid")
    expire_stale(grid.study)
    g = GridRun.objects.get(pk=grid.pk)
    if g.status in GridRun.FINAL:
        raise GridRefused(f"grid {g.pk} is already {g.status}")
    if g.status == GridRun.Status.CONCLUDING:
        raise GridRefused(f"grid {g.pk} has finished computing and its results are being stored; "
                          "it can no longer be cancelled")
    GridRun.objects.filter(pk=g.pk).update(cancel_requested=True)
    record(actor, "grid.cancel", g, {"status": g.status})
    moved = move(g.pk, GridRun.Status.CANCELLED, error="cancelled before it started",
                 from_=(GridRun.Status.QUEUED,))
    if moved is None:
        g.refresh_from_db()
        _publish_status(g)
        return g
    return moved


# --- execution ------------------------------------------------------------------------------

def grid_config(grid: GridRun):
    """The GridConfig of a stored grid (fl_engine.experiments.grid)."""
    c = grid.config
    return GridConfig(use_case=c["use_case"], endpoint=c["endpoint"], model=c["model"],
                      model_params=dict(c.get("model_params") or {}), feature_groups=tuple(c["feature_groups"]),
                      rounds=int(c["rounds"]), local_epochs=int(c.get("local_epochs", 1)),
                      seeds=tuple(range(int(c["seeds"]))), federations=tuple(int(k) for k in c["federations"]),
                      cases=tuple(c["cases"]), isolated=bool(c["isolated"]), n_boot=int(c["n_boot"]))


def load_grid_cohort(grid: GridRun):
    """The pooled table of a grid: the generated MDS cohort or the released synthetic cohort's
    file (re-checked: released, same study). Never a hospital's data."""
    import pandas as pd

    if grid.source == GridRun.Source.GENERATED:
        return generate_mds_cohort(int(grid.generated_n), int(grid.generated_seed))
    cohort = grid.synthetic_cohort
    if cohort is None or not cohort.released or cohort.run.study_id != grid.study_id:
        raise GridRefused("the grid's synthetic cohort is no longer a released cohort of this study")
    with cohort.file.open("rb") as f:
        if cohort.file.name.endswith(".parquet"):
            return pd.read_parquet(f)
        return pd.read_csv(f)


class GridTakenOver(Exception):
    """This worker no longer owns the grid (another took it over after it went silent)."""


def _progress_logger(grid_id: int, owner: str):
    def log_line(message: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        g = GridRun.objects.only("progress", "cancel_requested", "task_id").get(pk=grid_id)
        if g.task_id != owner:
            raise GridTakenOver
        GridRun.objects.filter(pk=grid_id, task_id=owner).update(
            progress=(g.progress + f"{stamp} {message}\n")[-20_000:], heartbeat_at=timezone.now())
        publish_grid(grid_id, "progress", {"status": GridRun.Status.RUNNING, "line": f"{stamp} {message}"})
        if g.cancel_requested:
            raise GridCancelled
    return log_line


class _Heartbeat:
    """Stamps heartbeat_at every GRID_HEARTBEAT_S while the grid is computed (a thread of its own,
    with its own database connection): a worker that dies stops stamping, and the reconciler or
    the next delivery of the task takes the grid over."""

    def __init__(self, grid_id: int, owner: str):
        import threading

        self.grid_id, self.owner = grid_id, owner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"grid-{grid_id}-heartbeat", daemon=True)

    def _beat(self) -> None:
        from django.db import connection

        try:
            while not self.stop.wait(GRID_HEARTBEAT_S):
                try:
                    retry_on_lock(lambda: GridRun.objects.filter(pk=self.grid_id, task_id=self.owner).update(
                        heartbeat_at=timezone.now()))
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next
                    log.warning("grid %s: heartbeat not stored (%s)", self.grid_id, exc)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(GRID_HEARTBEAT_S + 5)


def _settle_silent(g: GridRun) -> str:
    """End active grid `g`, whose worker went silent, when nothing is left to compute: its
    results are stored (only the last move was lost) -> finished; a cancel waits on it ->
    cancelled; GRID_MAX_ATTEMPTS workers have taken it up -> failed. Returns the status it
    moved to ("" when the grid must be handed to another worker, or another writer moved it)."""
    S = GridRun.Status
    if g.status == S.CONCLUDING and (g.results or {}).get("summary"):  # not seeds kept while running
        moved = move(g.pk, S.FINISHED, from_=(S.CONCLUDING,))
    elif g.cancel_requested and g.status != S.CONCLUDING:
        moved = move(g.pk, S.CANCELLED, error="cancelled (its worker had stopped)")
    elif g.attempts >= GRID_MAX_ATTEMPTS:
        moved = move(g.pk, S.FAILED, error=f"the worker computing this grid stopped {g.attempts} times (killed or "
                                           "restarted); start it again when the workers are stable")
    else:
        return ""
    return moved.status if moved is not None else ""


def _claim(grid_id: int, owner: str) -> tuple[GridRun | None, str]:
    """Take grid `grid_id` for this task: a queued grid is claimed (queued -> starting); an
    active grid whose worker went silent for GRID_STALE_S is taken over (at most
    GRID_MAX_ATTEMPTS workers in all). Returns (grid, "") or (None, the status to report)."""
    from django.db.models import F

    g = GridRun.objects.filter(pk=grid_id).first()
    if g is None:
        log.warning("grid %s: nothing to run, the grid no longer exists", grid_id)
        return None, "missing"
    now = timezone.now()
    if g.status == GridRun.Status.QUEUED:
        if g.cancel_requested:
            move(grid_id, GridRun.Status.CANCELLED, error="cancelled before it started")
            return None, GridRun.Status.CANCELLED
        claimed = move(grid_id, GridRun.Status.STARTING, from_=(GridRun.Status.QUEUED,), task_id=owner,
                       heartbeat_at=now, attempts=F("attempts") + 1)
        if claimed is None:
            return None, GridRun.objects.get(pk=grid_id).status
        return claimed, ""
    if g.status in GridRun.FINAL:
        return None, g.status
    # Active: a redelivered message (the broker redelivers unacknowledged messages of long
    # tasks, and those of a killed worker) finds it computed elsewhere, or its worker gone.
    if _silent_for(g, now) < GRID_STALE_S:
        return None, g.status
    if _settle_silent(g):
        return None, GridRun.objects.get(pk=grid_id).status
    took = GridRun.objects.filter(pk=grid_id, status=g.status, task_id=g.task_id, heartbeat_at=g.heartbeat_at).update(
        task_id=owner, heartbeat_at=now, attempts=F("attempts") + 1,
        progress=(g.progress + f"{now:%H:%M:%S} restarted: the worker computing it stopped "
                               f"({_silent_for(g, now):.0f} s without a sign of life); the seeds it finished "
                               "are kept\n")[-20_000:])
    if not took:
        return None, GridRun.objects.get(pk=grid_id).status
    return GridRun.objects.get(pk=grid_id), ""


def execute_grid(grid_id: int, task_id: str = "") -> str:
    """Compute grid `grid_id` and store its results; returns the status it leaves the grid in.
    queued -> starting -> running -> concluding (results stored) -> finished, or failed with the
    error, or cancelled (a cancel request stops it between settings). Safe to deliver twice."""
    import uuid

    from celery.exceptions import SoftTimeLimitExceeded

    owner = (task_id or "local")[:28] + ":" + uuid.uuid4().hex[:12]
    g, status = _claim(grid_id, owner)
    if g is None:
        return status
    S = GridRun.Status
    if g.status == S.STARTING:
        move(grid_id, S.RUNNING, from_=(S.STARTING,))
    grid = GridRun.objects.select_related("study", "synthetic_cohort", "synthetic_cohort__run").get(pk=grid_id)
    try:
        with _Heartbeat(grid_id, owner):
            cfg = grid_config(grid)
            df = load_grid_cohort(grid)
            done = stored_seeds(grid)  # seeds a worker before this one finished: kept
            progress = _progress_logger(grid.pk, owner)
            progress(f"cohort loaded: {len(df)} rows; settings follow (cancellation is checked between them)"
                     + (f"; seed(s) {', '.join(sorted(done, key=int))} already computed, kept" if done else ""))
            run_grid(df, cfg, log=progress, on_seed=_seed_keeper(grid_id, owner, cfg, done),
                     skip_seeds=[int(s) for s in done])
            results = _frame([r for s in cfg.seeds for r in done[str(s)]["results"]])
            rounds = _frame([r for s in cfg.seeds for r in done[str(s)]["rounds"]])
            payload = build_results(df, results, rounds, None, cfg, km=done[str(cfg.seeds[0])]["km"])
    except GridTakenOver:
        return GridRun.objects.get(pk=grid_id).status
    except GridCancelled:
        move(grid_id, S.CANCELLED, error="cancelled while running", from_=(S.STARTING, S.RUNNING))
        return GridRun.objects.get(pk=grid_id).status
    except SoftTimeLimitExceeded:
        move(grid_id, S.FAILED, error=f"the grid exceeded its time limit of {GRID_TIME_LIMIT_S} s")
        return GridRun.objects.get(pk=grid_id).status
    except Exception as exc:
        log.exception("grid %s failed", grid_id)
        move(grid_id, S.FAILED, error=f"{type(exc).__name__}: {exc}")
        return GridRun.objects.get(pk=grid_id).status
    cur = GridRun.objects.only("status", "task_id").get(pk=grid_id)
    if cur.task_id != owner:
        return cur.status  # taken over meanwhile
    if cur.status != S.CONCLUDING and move(grid_id, S.CONCLUDING, from_=(S.RUNNING,)) is None:
        return GridRun.objects.get(pk=grid_id).status  # cancelled meanwhile
    GridRun.objects.filter(pk=grid_id, status=S.CONCLUDING, task_id=owner).update(results=payload)
    move(grid_id, S.FINISHED, from_=(S.CONCLUDING,))
    return GridRun.objects.get(pk=grid_id).status


def reconcile_grids(now=None) -> dict:
    """Celery beat, the grids' part of the reconciler: a queued grid whose task message was lost
    is queued again (once); an active grid whose worker went silent is handed to a new worker
    (queued again, at most once per GRID_STALE_S), cancelled when a cancel waits on it, failed
    after GRID_MAX_ATTEMPTS workers or past its time limit, with the reason."""
    from datetime import timedelta

    from portal.experiments import tasks  # cycle: portal.experiments.tasks imports this module

    now = now or timezone.now()
    did = {"requeued": 0, "taken_over": 0, "failed": 0, "cancelled": 0}
    for g in GridRun.objects.filter(status=GridRun.Status.QUEUED, created_at__lt=now - timedelta(seconds=120)):
        if not g.task_id:
            tasks.execute_grid.delay(g.pk)
            GridRun.objects.filter(pk=g.pk, task_id="").update(task_id="requeued")
            did["requeued"] += 1
    active = GridRun.objects.filter(status__in=GridRun.ACTIVE).exclude(status=GridRun.Status.QUEUED)
    for g in active:
        silent = _silent_for(g, now)
        if g.started_at and g.started_at < now - timedelta(seconds=GRID_TIME_LIMIT_S + 600):
            did["failed"] += move(g.pk, GridRun.Status.FAILED,
                                  error=f"the worker running this grid stopped and it did not end within its "
                                        f"time limit of {GRID_TIME_LIMIT_S} s") is not None
        elif silent < GRID_STALE_S:
            continue
        elif settled := _settle_silent(g):
            did[settled] = did.get(settled, 0) + 1
        elif not g.task_id.startswith("handover@") or silent >= 2 * GRID_STALE_S:
            # The next delivery takes it over (execute_grid -> _claim); marked so that one silent
            # grid is queued once per stale period, not at every pass.
            GridRun.objects.filter(pk=g.pk, task_id=g.task_id).update(task_id=f"handover@{now:%H%M%S}")
            tasks.execute_grid.delay(g.pk)
            did["taken_over"] += 1
    return did


# --- results --------------------------------------------------------------------------------

def _clean(v):
    """JSON-safe scalar: numpy -> Python, NaN/inf -> None (a JSON column cannot hold NaN)."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _records(df, columns) -> list[dict]:
    cols = [c for c in columns if c in df]
    return [{c: _clean(v) for c, v in zip(cols, row)} for row in df[cols].itertuples(index=False, name=None)]


def stored_seeds(grid: GridRun) -> dict:
    """{seed (text): {"results", "rounds", "km"}} of the seeds of `grid` already computed (kept
    in its results while it runs, so a worker that takes it over does not compute them again)."""
    return dict((grid.results or {}).get("seeds_done") or {})


def _seed_keeper(grid_id: int, owner: str, cfg, done: dict):
    """on_seed of run_grid: store each finished seed in the grid's results as it finishes."""
    def keep(seed, rows, round_rows, extras) -> None:
        done[str(seed)] = {"results": [{k: _clean(v) for k, v in r.items()} for r in rows],
                           "rounds": [{k: _clean(v) for k, v in r.items()} for r in round_rows],
                           "km": km_panels(extras, cfg) if seed == cfg.seeds[0] else None}
        if not GridRun.objects.filter(pk=grid_id, task_id=owner).update(results={"seeds_done": done}):
            raise GridTakenOver
    return keep


_KEPT_AS_IS = {"setting", "case", "eval", "trained_on", "note", "score", "node", "coverage_ok"}


def _frame(rows: list[dict]):
    """Stored seed rows (None for NaN) back to a table with numeric columns."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in df.columns:
        if c not in _KEPT_AS_IS:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def build_results(cohort_df, results, rounds, extras, cfg, km: dict | None = None) -> dict:
    """What a finished grid stores: summary rows (mean over seeds, mean bootstrap interval),
    the per-seed rows (results.csv), per-round C on the nodes' hold-outs (mean over seeds) and
    Kaplan-Meier curves of the first seed's test set by group (months; from `extras`, or `km`
    as km_panels made them when the seed finished)."""
    summary = summarise(results)
    rows = []
    for rec in _records(summary, list(SUMMARY_KEYS.values())):
        rows.append({key: rec.get(col) for key, col in SUMMARY_KEYS.items()})
    out_rounds = []
    if len(rounds):
        r = rounds[~(rounds.setting.str.startswith("isolated") & (rounds.node == "global"))]
        agg = r.groupby(["setting", "case", "node", "round"], sort=True)["c_index"].agg(["mean", "count"]).reset_index()
        agg = agg.rename(columns={"mean": "c_index", "count": "seeds"})
        out_rounds = _records(agg, ["setting", "case", "node", "round", "c_index", "seeds"])
    return {"summary": rows, "per_seed": _records(results, PER_SEED_COLUMNS), "rounds": out_rounds,
            "km": km if km is not None else km_panels(extras, cfg), "cohort_rows": int(len(cohort_df)),
            "usable_rows": int(len(usable_rows(cohort_df, cfg))), "seeds": list(cfg.seeds)}


def results_csv(grid: GridRun) -> str:
    """The per-seed results of a finished grid as CSV (one row per seed, setting, case and
    evaluation set; the grid's command line writes the same results.csv)."""
    import pandas as pd

    rows = (grid.results or {}).get("per_seed") or []
    return pd.DataFrame(rows, columns=PER_SEED_COLUMNS).to_csv(index=False)
