"""The run lifecycle without a SuperLink process: the engine runs in this process and prints its
events exactly as the ServerApp does; the SuperLink's answers (run list, run log) are that
output, handed to the Flower adapter's two read calls. The real-process tests
(test_federation_e2e, tests/security/test_participation.py) cover the same path with Flower."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(personas, approved_node):
    from portal.datasets.models import Dataset
    from portal.studies import services
    from portal.studies.models import Study

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=300, feature_schema=["age", "hb", "os_months", "os_event"],
                                fingerprint="f" * 64)
    s = Study.objects.create(title="Lifecycle", use_case="MDS", owner=personas["coordinator"], min_nodes=1,
                             features=["age", "hb"], hyperparameters={"local_epochs": 1}, rounds=2)
    s.datasets.add(ds)
    services.decide_approval(personas["node_operator"], s, ds, "approved")
    return s


def _engine_log(run, capsys) -> str:
    """Run `run`'s own Flower config in process (two hospitals' generated tables) and return what
    the ServerApp would have printed: its numbered events, artefacts included."""
    from fl_engine.cohort import generate_mds_cohort
    from fl_engine.federation.config import parse_contract
    from fl_engine.federation.events import EventSink
    from fl_engine.federation.executor import LocalTransport
    from fl_engine.federation.loop import run_federation
    from portal.studies import services

    contract = services.flower_run_config(run)
    contract["reporting"]["events_url"] = ""
    contract["analysis"]["comparison"] = False
    cfg = parse_contract(contract)
    df = generate_mds_cohort(300, seed=3)
    idx = np.random.default_rng(0).permutation(len(df))
    tables = {"hosp-a-node": df.iloc[idx[:150]], "hosp-b": df.iloc[idx[150:]]}
    capsys.readouterr()
    run_federation(cfg, LocalTransport(cfg, tables), EventSink(run.pk, echo=True))
    return capsys.readouterr().out


def _flower(monkeypatch, runs: dict, logs: dict, stopped: list | None = None):
    from portal.studies import flower_adapter

    monkeypatch.setattr(flower_adapter, "list_runs", lambda: [{"run-id": k, "status": v} for k, v in runs.items()])
    monkeypatch.setattr(flower_adapter, "run_logs", lambda rid, strict=False: logs.get(rid, ""))
    monkeypatch.setattr(flower_adapter, "stop_run", lambda rid: (stopped if stopped is not None else []).append(rid))


def _running(run, flower_id="77"):
    from portal.studies import lifecycle

    assert lifecycle.transition(run.pk, "starting")
    assert lifecycle.transition(run.pk, "running", flower_run_id=flower_id)


def test_reconciler_concludes_a_run_whose_every_event_was_dropped(study, personas, monkeypatch, capsys):
    from portal.studies import lifecycle, services, tracking
    from portal.studies.models import ModelVersion, RoundMetric, RunEvent

    run = services.start_run(personas["coordinator"], study)
    log_text = _engine_log(run, capsys)
    _running(run)
    assert not RunEvent.objects.filter(run=run).exists()  # no POST arrived at all
    _flower(monkeypatch, {"77": "finished:completed"}, {"77": "INFO something else\n" + log_text})
    did = lifecycle.reconcile()
    run.refresh_from_db()
    assert run.status == "concluding" and did["replayed"] >= 4, did
    assert lifecycle.reconcile()["replayed"] == 0  # a second pass finds nothing new
    assert lifecycle.conclude(run.pk) == "finished"
    assert lifecycle.conclude(run.pk) == "finished"  # repeated: nothing twice
    run.refresh_from_db()
    assert run.status == "finished" and ModelVersion.objects.filter(run=run).count() == 1
    assert (services.run_dir(run) / "model" / "model.npz").exists()
    mv = ModelVersion.objects.get(run=run)  # the pyfunc names what it needs, pinned
    import mlflow
    reqs = Path(mlflow.artifacts.download_artifacts(mv.artifact_uri)) / "requirements.txt"
    assert set(reqs.read_text().split()) == set(tracking.model_requirements())
    assert any(r.startswith("fedhaem==") for r in tracking.model_requirements())
    rounds = set(RoundMetric.objects.filter(run=run, name="c_index", node="global").values_list("round", flat=True))
    assert rounds == {1, 2}  # no metric lost
    assert set(RunEvent.objects.filter(run=run).values_list("source", flat=True)) == {"log"}
    # concluded: the database keeps the files' names and sizes, not the model itself
    finished = RunEvent.objects.get(run=run, type="finished")
    assert "artefacts" not in finished.body and finished.body["artefacts_dropped"]["model.npz"] > 0
    assert lifecycle.conclude(run.pk) == "finished" and lifecycle.drop_artefacts(run.pk) == 0


def test_events_arrive_twice_by_post_and_by_log_and_count_once(study, personas, monkeypatch, capsys):
    from fl_engine.federation.events import parse_log_events
    from portal.studies import lifecycle, services
    from portal.studies.models import RoundMetric, RunEvent

    run = services.start_run(personas["coordinator"], study)
    log_text = _engine_log(run, capsys)
    _running(run)
    events = parse_log_events(log_text)
    for ev in events[:3]:  # the first events arrive by POST, some of them twice
        assert lifecycle.ingest_event(run.pk, ev)
        assert not lifecycle.ingest_event(run.pk, ev)
    _flower(monkeypatch, {"77": "finished:completed"}, {"77": log_text})
    lifecycle.reconcile()
    assert RunEvent.objects.filter(run=run).count() == len(events)
    assert RoundMetric.objects.filter(run=run, name="c_index", node="global").count() == 2


def test_the_same_event_three_times_is_stored_once(study, personas):
    from portal.studies import lifecycle, services
    from portal.studies.models import RunEvent

    run = services.start_run(personas["coordinator"], study)
    _running(run)
    ev = {"seq": 1, "type": "round", "round": 1, "phase": "round",
          "metrics": [{"node": "global", "name": "c_index", "value": 0.7}]}
    results = []
    for _ in range(3):
        results.append(lifecycle.ingest_event(run.pk, dict(ev)))
    assert results == [True, False, False]
    assert RunEvent.objects.filter(run=run).count() == 1


def test_reconciler_fails_a_run_flower_does_not_know(study, personas, monkeypatch):
    from portal.studies import lifecycle, services

    run = services.start_run(personas["coordinator"], study)
    _running(run, "123")
    _flower(monkeypatch, {}, {})
    lifecycle.reconcile()
    run.refresh_from_db()
    assert run.status == "failed" and "does not know Flower run 123" in run.error


def test_reconciler_names_the_federations_failure(study, personas, monkeypatch):
    from portal.studies import lifecycle, services

    run = services.start_run(personas["coordinator"], study)
    _running(run)
    log_text = ('FEDHAEM-EVENT {"run": %d, "seq": 1, "type": "started"}\n'
                'FEDHAEM-EVENT {"run": %d, "seq": 2, "type": "failed", "reason": "round 2 training: '
                '1 node(s) replied, fewer than min_nodes=2"}\n') % (run.pk, run.pk)
    _flower(monkeypatch, {"77": "finished:failed"}, {"77": log_text})
    lifecycle.reconcile()
    run.refresh_from_db()
    assert run.status == "failed" and "fewer than min_nodes=2" in run.error


def test_reconciler_stops_a_run_past_its_time_limit(study, personas, monkeypatch, settings):
    from datetime import timedelta

    from django.utils import timezone

    from portal.studies import lifecycle, services
    from portal.studies.models import Run

    run = services.start_run(personas["coordinator"], study)
    _running(run)
    stopped = []
    _flower(monkeypatch, {"77": "running"}, {}, stopped)
    lifecycle.reconcile()
    assert Run.objects.get(pk=run.pk).status == "running" and not stopped
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=settings.RUN_TIME_LIMIT_S + 500))
    lifecycle.reconcile()
    run.refresh_from_db()
    assert run.status == "failed" and "time limit" in run.error and stopped == ["77"]


def test_a_lost_start_task_is_queued_again(study, personas, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from portal.studies import lifecycle, services
    from portal.studies.models import Run

    run = services.start_run(personas["coordinator"], study)  # on_commit never ran: the task is lost
    Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert lifecycle.reconcile()["redispatched"] == 1
    assert len(callbacks) == 1


def test_final_states_are_never_left_and_concluding_runs_cannot_be_cancelled(study, personas):
    from portal.studies import lifecycle, services

    run = services.start_run(personas["coordinator"], study)
    _running(run)
    assert lifecycle.transition(run.pk, "concluding")
    with pytest.raises(services.RunRefused, match="results are being stored"):
        services.cancel_run(personas["coordinator"], run)
    assert lifecycle.transition(run.pk, "finished")
    assert lifecycle.transition(run.pk, "failed") is None
    assert lifecycle.transition(run.pk, "running") is None
    run.refresh_from_db()
    assert run.status == "finished"


def test_two_reconcilers_at_once_move_a_run_once(study, personas, monkeypatch, capsys):
    from portal.studies import lifecycle, services
    from portal.studies.models import Run

    run = services.start_run(personas["coordinator"], study)
    _running(run, "9")
    _flower(monkeypatch, {"9": "finished:stopped"}, {"9": ""})
    moves = []
    original = lifecycle.transition

    def counting(*a, **k):
        out = original(*a, **k)
        if out is not None:
            moves.append(a[1])
        return out

    monkeypatch.setattr(lifecycle, "transition", counting)
    lifecycle.reconcile()
    lifecycle.reconcile()
    assert moves == ["cancelled"] and Run.objects.get(pk=run.pk).status == "cancelled"


def test_queued_runs_wait_behind_the_active_ones(study, personas, settings):
    from portal.studies import lifecycle, services

    settings.MAX_ACTIVE_RUNS = 1
    first = services.start_run(personas["coordinator"], study)
    _running(first)
    second = services.start_run(personas["coordinator"], study)
    third = services.start_run(personas["coordinator"], study)
    assert lifecycle.submit(second.pk) == "queued"  # the SuperLink's one slot is taken
    assert lifecycle.queue_position(second) == [first.pk]
    assert lifecycle.queue_position(third) == [first.pk, second.pk]


def test_a_grid_whose_worker_vanished_is_failed_and_a_lost_grid_task_is_queued_again(personas, settings):
    from datetime import timedelta

    from django.utils import timezone

    from portal.experiments import services as grid_services
    from portal.experiments.models import GridRun
    from portal.studies.models import Study

    study = Study.objects.create(title="Grid", use_case="MDS", owner=personas["coordinator"])
    running = GridRun.objects.create(study=study, source="generated", status="running", created_by=personas["coordinator"],
                                     started_at=timezone.now() - timedelta(seconds=grid_services.GRID_TIME_LIMIT_S + 900))
    fresh = GridRun.objects.create(study=study, source="generated", status="running", created_by=personas["coordinator"],
                                   started_at=timezone.now())
    queued = GridRun.objects.create(study=study, source="generated", created_by=personas["coordinator"])
    GridRun.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    did = grid_services.reconcile_grids()
    assert (did["requeued"], did["failed"], did["taken_over"]) == (1, 1, 0)
    running.refresh_from_db()
    fresh.refresh_from_db()
    assert running.status == "failed" and "worker running this grid stopped" in running.error
    assert fresh.status == "running"
    assert grid_services.reconcile_grids()["requeued"] == 0  # queued once, not every pass


def test_a_conclusion_that_keeps_failing_is_retried_then_failed_with_the_reason(study, personas, monkeypatch,
                                                                                 django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from portal.studies import lifecycle, services
    from portal.studies.models import Run, RunEvent

    run = services.start_run(personas["coordinator"], study)
    _running(run)
    queued = []
    monkeypatch.setattr(lifecycle, "queue_conclusion", queued.append)
    assert lifecycle.ingest_event(run.pk, {"seq": 1, "type": "finished", "artefacts": {}})
    assert queued == [run.pk] and Run.objects.get(pk=run.pk).status == "concluding"
    Run.objects.filter(pk=run.pk).update(status_changed_at=timezone.now() - timedelta(minutes=2))
    lifecycle.reconcile()
    assert queued == [run.pk, run.pk]  # the lost conclusion task is queued again
    RunEvent.objects.filter(run=run).update(received_at=timezone.now() - timedelta(hours=1))
    lifecycle.reconcile()
    run.refresh_from_db()
    assert run.status == "failed" and "could not be stored" in run.error


def test_a_hospital_that_missed_a_phase_is_named_on_the_run(study, personas, client):
    from portal.studies import lifecycle, services

    run = services.start_run(personas["coordinator"], study)
    _running(run)
    assert lifecycle.ingest_event(run.pk, {"seq": 1, "type": "node_missed", "phase": "round 1 training",
                                           "node": "hosp-c", "reason": "TimeoutError: no reply within 120 s"})
    client.force_login(personas["clinician"])
    body = client.get(f"/api/runs/{run.pk}/").json()
    assert body["missed"] == [{"phase": "round 1 training", "node": "hosp-c",
                               "reason": "TimeoutError: no reply within 120 s"}]
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "Hospitals that missed a phase" in page and "no reply within 120 s" in page
