"""The one run lifecycle of the portal. Every kind of run moves through the same state machine
(`move`, TRANSITIONS below): survival training and synthetic generation are Flower runs and plug
in with a config builder and a conclusion hook (RunKind); experiment grids, computed on the
manager, use the same states and moves with a worker heartbeat in place of the SuperLink
(portal.experiments.services).

    queued -> starting -> running -> concluding -> finished
       \\          \\          \\            \\-> failed
        \\-> cancelled / failed (from any state before concluding)

Who writes what (one writer per fact):
- `submit` (Celery task `submit_run`, seconds long) claims a queued run and hands it to the
  SuperLink; it holds no worker for the life of the run.
- `ingest_event` is the only writer of a run's metrics and of its running -> concluding /
  failed moves caused by the federation; every event is numbered and stored once (RunEvent),
  whether it came by POST from the ServerApp or from the ServerApp's log on replay.
- `conclude` (Celery task `conclude_run`) turns a concluding run's artefacts into a registered
  model or a stored cohort, and finishes it. Safe to repeat.
- `reconcile` (Celery beat, every RECONCILE_EVERY_S) compares every active run with the
  SuperLink: it re-queues lost work, replays events a POST lost, concludes or fails what Flower
  ended, and stops runs past their time limit. Every move is a conditional UPDATE, so two
  reconcilers (or a reconciler and a task) at once cannot move a run twice.
No network call happens inside a database transaction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from fl_engine.federation import events as run_events
from portal.audit.services import record
from portal.core.db import retrying_on_lock
from portal.core.live import publish_run
from portal.studies import flower_adapter
from portal.studies.models import RoundMetric, Run, RunEvent

log = logging.getLogger(__name__)
S = Run.Status

# Allowed moves; anything else is refused (a final state is never left).
TRANSITIONS: dict[str, set[str]] = {
    S.QUEUED: {S.STARTING, S.FAILED, S.CANCELLED},
    S.STARTING: {S.RUNNING, S.FAILED, S.CANCELLED},
    S.RUNNING: {S.CONCLUDING, S.FAILED, S.CANCELLED},
    S.CONCLUDING: {S.FINISHED, S.FAILED},
}
FINAL = tuple(Run.FINAL)
QUEUED_REDISPATCH_S = 20    # a queued run whose start task has not claimed it is queued again
STARTING_STALE_S = 240      # the start task died between claiming and recording the Flower run
CONCLUDING_REDISPATCH_S = 30
CONCLUDING_LIMIT_S = 1800   # results that could not be stored in this long: failed, not retried forever
MAX_EVENT_BYTES = 256 * 1024 * 1024


class RunRefused(Exception):
    """The run cannot start or change state; the message says why."""


# --- kinds ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunKind:
    """How one kind of run plugs in: its Flower run config and its conclusion."""

    flower_config: Callable[[Run], dict]
    # (run, artefact files) -> "" when concluded, else the reason it could not be
    conclude: Callable[[Run, dict[str, bytes]], str]


def _kinds() -> dict[str, RunKind]:
    # The kinds live in their apps (studies, synthesis, analyses).
    from portal.analyses import services as analysis_services  # cycle: it imports this module
    from portal.studies import services as study_services  # cycle: it imports this module
    from portal.synthesis import services as synthesis_services  # cycle: it imports this module

    return {Run.Kind.SURVIVAL: RunKind(study_services.flower_run_config, study_services.conclude_survival),
            Run.Kind.SYNTHESIS: RunKind(synthesis_services.flower_generation_config,
                                        synthesis_services.conclude_generation_files),
            Run.Kind.ANALYSIS: RunKind(analysis_services.flower_analysis_config,
                                       analysis_services.conclude_analysis)}


def kind_of(run: Run) -> RunKind:
    return _kinds()[run.kind]


# --- moves ---------------------------------------------------------------------------------

@retrying_on_lock()
def move(model, pk: int, to: str, *, error: str = "", from_: tuple[str, ...] | None = None, **fields):
    """The one state machine, for every kind of run (a Run of either kind, an experiment grid):
    move row `pk` of `model` to `to` if TRANSITIONS allow it from its current status (and it is
    in `from_` when given), in one conditional UPDATE. Returns the updated row, or None when
    another writer moved it first. Stamps status_changed_at, started_at (first time running)
    and finished_at (final states)."""
    allowed = [s for s, nexts in TRANSITIONS.items() if to in nexts and (from_ is None or s in from_)]
    now = timezone.now()
    values = {"status": to, "status_changed_at": now, **fields}
    if error:
        values["error"] = error[:5000]
    if to == S.RUNNING:
        values.setdefault("started_at", now)
    if to in FINAL:
        values["finished_at"] = now
    with transaction.atomic():
        if to == S.RUNNING and model.objects.filter(pk=pk, started_at__isnull=False).exists():
            values.pop("started_at")
        moved = model.objects.filter(pk=pk, status__in=allowed).update(**values)
    return model.objects.get(pk=pk) if moved else None


def transition(run_id: int, to: str, *, error: str = "", from_: tuple[str, ...] | None = None,
               **fields) -> Run | None:
    """`move` for a Run: then tells the run's viewers, and a final state frees a slot."""
    run = move(Run, run_id, to, error=error, from_=from_, **fields)
    if run is None:
        return None
    publish_run(run_id, "status", {"status": run.status, "error": run.error})
    if to in FINAL:
        dispatch_next()
    return run


def dispatch_next() -> None:
    """A slot freed: queue the start task of the oldest queued run (it claims the slot or
    stays queued; the reconciler catches whatever this misses)."""
    nxt = Run.objects.filter(status=S.QUEUED, cancel_requested=False).order_by("created_at").values_list(
        "pk", flat=True).first()
    if nxt is not None:
        dispatch(nxt)


def queue_position(run: Run) -> list[int]:
    """Ids of the runs ahead of queued `run`: active runs holding a slot, then older queued ones."""
    if run.status != S.QUEUED:
        return []
    holding = list(Run.objects.filter(status__in=(S.STARTING, S.RUNNING, S.CONCLUDING))
                   .order_by("created_at").values_list("pk", flat=True))
    if len(holding) < settings.MAX_ACTIVE_RUNS:
        holding = []
    ahead = list(Run.objects.filter(status=S.QUEUED, created_at__lt=run.created_at)
                 .order_by("created_at").values_list("pk", flat=True))
    return holding + ahead


def dispatch(run_id: int) -> None:
    """Queue the start task of run `run_id` (after the current transaction commits)."""
    from portal.studies import tasks  # cycle: portal.studies.tasks imports this module

    def send():
        Run.objects.filter(pk=run_id).update(dispatched_at=timezone.now())
        try:
            tasks.submit_run.delay(run_id)
        except Exception as exc:  # broker down: the reconciler queues it again
            log.warning("run %s: start not queued (%s); the reconciler will retry", run_id, exc)

    transaction.on_commit(send)


def submit(run_id: int, task_id: str = "") -> str:
    """Claim queued run `run_id` and submit it to the SuperLink; returns the resulting status.
    Leaves it queued when MAX_ACTIVE_RUNS runs hold the SuperLink (the reconciler retries)."""
    run = Run.objects.get(pk=run_id)
    if run.status != S.QUEUED:
        return run.status
    if run.cancel_requested:
        transition(run_id, S.CANCELLED, error="cancelled before it started")
        return S.CANCELLED
    ahead = [pk for pk in queue_position(run) if pk != run_id]
    active = Run.objects.filter(status__in=(S.STARTING, S.RUNNING, S.CONCLUDING)).count()
    if active >= settings.MAX_ACTIVE_RUNS:
        publish_run(run_id, "status", {"status": run.status, "queued_behind": ahead})
        return S.QUEUED
    run = transition(run_id, S.STARTING, from_=(S.QUEUED,), task_id=task_id)
    if run is None:
        return Run.objects.get(pk=run_id).status  # another task claimed it
    try:
        config = kind_of(run).flower_config(run)
    except (ValueError, RunRefused) as exc:
        transition(run_id, S.FAILED, error=f"the run's configuration is not valid: {exc}")
        return S.FAILED
    try:
        flower_id = flower_adapter.start_run(config)
    except (flower_adapter.FlowerUnavailable, ValueError) as exc:
        transition(run_id, S.FAILED, error=f"could not start the run on the SuperLink: {exc}")
        return S.FAILED
    moved = transition(run_id, S.RUNNING, from_=(S.STARTING,), flower_run_id=flower_id)
    if moved is None:
        # Its events moved it on already (a very short run), or it was cancelled meanwhile:
        # keep the Flower id either way, and stop what Flower started only for a cancel.
        Run.objects.filter(pk=run_id, flower_run_id="").update(flower_run_id=flower_id)
        status = Run.objects.get(pk=run_id).status
        if status == S.CANCELLED:
            _stop_quietly(flower_id)
        return status
    return S.RUNNING


def cancel(actor, run: Run) -> Run:
    """Stop an active run (not one already concluding: its results are being stored)."""
    run.refresh_from_db()
    if run.status == S.CONCLUDING:
        raise RunRefused(f"run {run.pk} finished on the federation and its results are being stored; "
                         "it can no longer be cancelled")
    if not run.active:
        raise RunRefused(f"run {run.pk} is already {run.status}")
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    stop_error = ""
    if run.flower_run_id:
        try:
            flower_adapter.stop_run(run.flower_run_id)
        except flower_adapter.FlowerUnavailable as exc:
            stop_error = f" (the SuperLink said: {exc})"
    record(actor, "run.cancel", run)
    moved = transition(run.pk, S.CANCELLED, error=f"cancelled by {actor.username}{stop_error}",
                       from_=(S.QUEUED, S.STARTING, S.RUNNING))
    if moved is None:
        run.refresh_from_db()
        if run.status == S.CONCLUDING:
            raise RunRefused(f"run {run.pk} finished before the cancel reached it; its results are being stored")
        return run
    return moved


# --- events --------------------------------------------------------------------------------

class EventRefused(ValueError):
    """A malformed event; the message names the field."""


def validate_event(ev: dict) -> dict:
    if not isinstance(ev, dict):
        raise EventRefused("an event must be a JSON object")
    seq = ev.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= 10_000_000:
        raise EventRefused(f"seq: a positive integer is required, got {seq!r}")
    if ev.get("type") not in run_events.TYPES:
        raise EventRefused(f"type: one of {', '.join(run_events.TYPES)} is required, got {ev.get('type')!r}")
    if ev["type"] == "round":
        if not isinstance(ev.get("round"), int) or not 0 <= ev["round"] <= 10_000:
            raise EventRefused("round: an integer round number is required")
        metrics = ev.get("metrics")
        if not isinstance(metrics, list) or len(metrics) > 100_000:
            raise EventRefused("metrics: a list of {node, name, value} is required")
        for i, m in enumerate(metrics):
            if not isinstance(m, dict) or not isinstance(m.get("node"), str) or not isinstance(m.get("name"), str):
                raise EventRefused(f"metrics[{i}]: node and name (text) are required")
            if m.get("value") is not None and not isinstance(m["value"], (int, float)):
                raise EventRefused(f"metrics[{i}].value: a number or null is required")
    if ev["type"] == "finished":
        arts = ev.get("artefacts", {})
        if not isinstance(arts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in arts.items()):
            raise EventRefused("artefacts: an object of file name -> base64 text is required")
        if any(k not in ARTEFACT_NAMES for k in arts):
            raise EventRefused(f"artefacts: unknown file(s) {sorted(set(arts) - ARTEFACT_NAMES)}")
    return ev


ARTEFACT_NAMES = {"model.npz", "model.json", "synthetic.csv", "synthesis.json", "analysis.json"}


def ingest_event(run_id: int, ev: dict, source: str = "push") -> bool:
    """Store event `ev` of run `run_id` once and apply it; False when it was stored before.
    Raises EventRefused when malformed or when the run does not exist."""
    ev = validate_event(ev)
    publish = _store_event(run_id, ev, source)
    if publish is None:
        return False
    # The moves below are their own short conditional updates (after the event is stored).
    if ev["type"] == "finished":
        if transition(run_id, S.CONCLUDING, from_=(S.STARTING, S.RUNNING)) is not None:
            queue_conclusion(run_id)
    elif ev["type"] == "failed":
        transition(run_id, S.FAILED, from_=(S.STARTING, S.RUNNING),
                   error=f"the federation failed: {str(ev.get('reason', 'no reason given'))[:4000]}")
    for event, payload in publish:
        publish_run(run_id, event, payload)
    return True


@retrying_on_lock()
def _store_event(run_id: int, ev: dict, source: str) -> list[tuple[str, dict]] | None:
    """One short transaction: the RunEvent row and the metrics it carries; None if stored before."""
    body = {k: v for k, v in ev.items() if k not in ("seq", "type", "run")}
    publish: list[tuple[str, dict]] = []
    with transaction.atomic():
        run = Run.objects.filter(pk=run_id).only("id", "rounds").first()
        if run is None:
            raise EventRefused(f"run {run_id} does not exist")
        try:
            with transaction.atomic():
                RunEvent.objects.create(run_id=run_id, seq=ev["seq"], type=ev["type"], body=body, source=source)
        except IntegrityError:
            return None
        Run.objects.filter(pk=run_id, last_event_seq__lt=ev["seq"]).update(last_event_seq=ev["seq"])
        if ev["type"] == "round":
            metrics = [m for m in body["metrics"] if m.get("value") is not None]
            for m in metrics:
                RoundMetric.objects.update_or_create(
                    run_id=run_id, round=body["round"], node=m["node"][:60], name=m["name"][:40],
                    defaults={"value": float(m["value"])})
            phase = body.get("phase", "round")
            publish.append(("round" if phase == "round" else phase,
                            {"round": body["round"], "rounds": run.rounds, "metrics": metrics}))
        elif ev["type"] == "phase":
            shown = {"phase": str(body.get("phase", ""))[:60]}
            if isinstance(body.get("round"), int):  # a phase's step (an analysis run's Cox iteration)
                shown["round"] = body["round"]
            publish.append(("phase", shown))
        elif ev["type"] == "node_missed":
            publish.append(("node_missed", missed_entry(body)))
    return publish


def missed_entry(body: dict) -> dict:
    """{phase, node, reason} of a "node_missed" event body, as text of bounded length."""
    return {"phase": str(body.get("phase", ""))[:80], "node": str(body.get("node", ""))[:60],
            "reason": str(body.get("reason", ""))[:1000]}


def missed_phases(run: Run) -> list[dict]:
    """The hospitals that did not answer a phase of run `run`, in the order the run reported them."""
    return [missed_entry(e.body) for e in run.events.filter(type="node_missed").order_by("seq")]


def queue_conclusion(run_id: int) -> None:
    from portal.studies import tasks  # cycle: portal.studies.tasks imports this module

    try:
        tasks.conclude_run.delay(run_id)
    except Exception as exc:  # broker down: the reconciler queues it again
        log.warning("run %s: conclusion not queued (%s); the reconciler will retry", run_id, exc)


def artefacts(run: Run) -> dict[str, bytes]:
    """The files of run `run`'s "finished" event (decoded); {} when there is none."""
    ev = run.events.filter(type="finished").order_by("-seq").first()
    if ev is None:
        return {}
    return {name: run_events.unpack_artefact(text) for name, text in (ev.body.get("artefacts") or {}).items()}


def conclude(run_id: int) -> str:
    """Store what concluding run `run_id` produced (its kind's hook) and finish it."""
    run = Run.objects.select_related("study").filter(pk=run_id).first()
    if run is None:  # deleted with its study after the task was queued
        log.warning("run %s: nothing to conclude, the run no longer exists", run_id)
        return "missing"
    if run.status != S.CONCLUDING:
        return run.status
    try:
        files = artefacts(run)
    except ValueError as exc:
        transition(run_id, S.FAILED, error=f"the run's results could not be read: {exc}")
        return S.FAILED
    problem = kind_of(run).conclude(run, files)
    if problem:
        transition(run_id, S.FAILED, error=problem, from_=(S.CONCLUDING,))
        drop_artefacts(run_id)
        return S.FAILED
    transition(run_id, S.FINISHED, from_=(S.CONCLUDING,))
    drop_artefacts(run_id)
    return S.FINISHED


@retrying_on_lock()
def drop_artefacts(run_id: int) -> int:
    """Once a run has concluded, its "finished" event keeps the names and sizes of its files, not
    the files: the model and the cohort live in the run folder, MLflow and the cohort store
    (encrypted at rest), not in plaintext in the database. Only a final run's events are touched;
    returns how many events were emptied."""
    if not Run.objects.filter(pk=run_id, status__in=FINAL).exists():
        return 0
    n = 0
    for ev in RunEvent.objects.filter(run_id=run_id, type="finished"):
        arts = ev.body.get("artefacts")
        if not arts:
            continue
        body = {k: v for k, v in ev.body.items() if k != "artefacts"}
        body["artefacts_dropped"] = {name: len(text) for name, text in arts.items()}
        n += RunEvent.objects.filter(pk=ev.pk).update(body=body)
    return n


# --- reconciliation ------------------------------------------------------------------------

def replay_log(run: Run) -> int:
    """Ingest the events of `run` found in its ServerApp log on the SuperLink; how many were new."""
    if not run.flower_run_id:
        return 0
    try:
        text = flower_adapter.run_logs(run.flower_run_id, strict=True)
    except flower_adapter.FlowerUnavailable as exc:
        log.warning("run %s: log replay failed: %s", run.pk, exc)
        return 0
    new = 0
    for ev in run_events.parse_log_events(text):
        try:
            new += ingest_event(run.pk, ev, source="log")
        except EventRefused as exc:
            log.warning("run %s: event %s in the log refused: %s", run.pk, ev.get("seq"), exc)
    return new


def reconcile(now=None) -> dict:
    """One pass over every active run (see the module docstring); returns what it did."""
    now = now or timezone.now()
    did = {"redispatched": 0, "concluded": 0, "failed": 0, "cancelled": 0, "replayed": 0, "stopped": 0}
    active = list(Run.objects.filter(status__in=Run.ACTIVE).order_by("created_at"))
    if not active:
        return did

    def older(ts, seconds):
        return ts is None or now - ts > timedelta(seconds=seconds)

    for run in active:
        if run.status == S.QUEUED and older(run.dispatched_at or run.created_at, QUEUED_REDISPATCH_S):
            dispatch(run.pk)  # outside a transaction: on_commit runs at once
            did["redispatched"] += 1
        elif run.status == S.STARTING and not run.flower_run_id and older(run.status_changed_at, STARTING_STALE_S):
            if transition(run.pk, S.FAILED, from_=(S.STARTING,),
                          error="the start was interrupted (the worker stopped while submitting the run "
                                f"to the SuperLink, more than {STARTING_STALE_S} s ago)"):
                did["failed"] += 1
        elif run.status == S.CONCLUDING and older(_finished_event_at(run), CONCLUDING_LIMIT_S):
            if transition(run.pk, S.FAILED, from_=(S.CONCLUDING,),
                          error=f"the federation finished, but its results could not be stored within "
                                f"{CONCLUDING_LIMIT_S} s (see the worker's log); its events are kept"):
                did["failed"] += 1
        elif run.status == S.CONCLUDING and older(run.status_changed_at, CONCLUDING_REDISPATCH_S):
            # status_changed_at doubles as the time of the last conclusion attempt
            Run.objects.filter(pk=run.pk, status=S.CONCLUDING).update(status_changed_at=now)
            queue_conclusion(run.pk)
            did["redispatched"] += 1

    running = [r for r in active if r.status in (S.RUNNING, S.STARTING) and r.flower_run_id]
    if not running:
        return did
    try:
        flower = {r["run-id"]: r for r in flower_adapter.list_runs()}
    except flower_adapter.FlowerUnavailable as exc:
        log.info("reconcile: the SuperLink does not answer (%s); %d run(s) wait", exc, len(running))
        return did
    for run in running:
        rec = flower.get(str(run.flower_run_id))
        if rec is None:
            if transition(run.pk, S.FAILED, from_=(S.STARTING, S.RUNNING),
                          error=f"the SuperLink does not know Flower run {run.flower_run_id} (it was "
                                "restarted without its state, or the run was removed)"):
                did["failed"] += 1
            continue
        status = str(rec.get("status", ""))
        if not status.startswith("finished"):
            started = run.started_at or run.created_at
            if older(started, settings.RUN_TIME_LIMIT_S + 120):
                _stop_quietly(run.flower_run_id)
                if transition(run.pk, S.FAILED, from_=(S.STARTING, S.RUNNING),
                              error=f"run exceeded its time limit of {settings.RUN_TIME_LIMIT_S} s and was stopped"):
                    did["stopped"] += 1
            continue
        # Flower ended it: make sure every event is in, then settle what the events did not.
        did["replayed"] += replay_log(run)
        run.refresh_from_db()
        if run.status not in (S.STARTING, S.RUNNING):
            did["concluded" if run.status == S.CONCLUDING else "failed"] += 1
            continue
        if status.endswith("stopped"):
            if transition(run.pk, S.CANCELLED, error="stopped on the SuperLink", from_=(S.STARTING, S.RUNNING)):
                did["cancelled"] += 1
        elif status.endswith("completed"):
            if transition(run.pk, S.FAILED, from_=(S.STARTING, S.RUNNING),
                          error="Flower completed the run but its results reached the portal neither by "
                                "POST nor in the ServerApp log"):
                did["failed"] += 1
        else:
            tail = flower_adapter.run_logs(run.flower_run_id)[-1500:]
            if transition(run.pk, S.FAILED, from_=(S.STARTING, S.RUNNING),
                          error=f"Flower reported {status} and the ServerApp reported no reason of its own: its "
                                "process was stopped (the SuperLink restarting during the run does this)"
                                f"\n--- ServerApp log (tail) ---\n{tail}"):
                did["failed"] += 1
    return did


def _finished_event_at(run: Run):
    """When the run's "finished" event arrived (the start of its conclusion), or None."""
    return run.events.filter(type="finished").order_by("seq").values_list("received_at", flat=True).first()


def _stop_quietly(flower_id: str) -> None:
    try:
        flower_adapter.stop_run(flower_id)
    except flower_adapter.FlowerUnavailable:
        pass
