"""The experiment grid in the portal (portal.experiments): starting one is validated option by
option (errors name the field, nothing stored), only released synthetic cohorts of the same
study or the generated MDS cohort may be pooled, roles as for runs; a tiny real grid runs through
`execute_grid` and its results reach the API, the CSV download and the comparison page."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from tests.portal.pages_world import build_world

pytestmark = pytest.mark.django_db

TINY = {"source": "generated", "n": 400, "seed": 3, "seeds": 1, "rounds": 2, "federations": [3],
        "cases": ["best", "worst"], "isolated": True, "n_boot": 20}


@pytest.fixture
def world(personas, p384_public_key, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return build_world(personas["administrator"], personas["coordinator"], personas["node_operator"],
                       p384_public_key)


def _url(study) -> str:
    return f"/api/studies/{study.pk}/grid-runs/"


def _grid_count() -> int:
    from portal.experiments.models import GridRun
    return GridRun.objects.count()


def _released_cohort(run, df: pd.DataFrame, released: bool = True):
    """A synthetic cohort of `run`'s study whose file holds `df` (as a generation run leaves it)."""
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from portal.synthesis.models import SyntheticCohort

    cohort = SyntheticCohort.objects.create(run=run, generator="vae_bgm", row_count=len(df), released=released,
                                            released_at=timezone.now() if released else None,
                                            validation_report={"gate": {"passed": released}})
    cohort.file.save(f"grid-test-{cohort.pk}.csv", ContentFile(df.to_csv(index=False).encode()))
    return cohort


def _other_study(personas, world):
    from portal.studies import services as study_services
    from portal.studies.models import Run

    other = study_services.create_study(personas["coordinator"], {
        "title": "Another MDS study", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
        "model_kind": "deepsurv", "datasets": [world["dataset"]], "rounds": 2, "min_nodes": 1})
    run = Run.objects.create(study=other, rounds=1, created_by=personas["coordinator"], status="finished",
                             kind="synthesis", config={})
    return other, run


# --- validation and roles --------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"seeds": 0}, "seeds"), ({"seeds": 6}, "seeds"), ({"rounds": 1}, "rounds"), ({"rounds": 31}, "rounds"),
    ({"federations": [4]}, "federations"), ({"federations": []}, "federations"),
    ({"cases": ["typical"]}, "cases"), ({"n_boot": -1}, "n_boot"), ({"model": "coxnet"}, "model"),
    ({"source": "hospital"}, "source"), ({"n": 10}, "n"), ({"synthetic_cohort": 5}, "synthetic_cohort"),
])
def test_bad_options_are_a_400_naming_the_field_and_store_nothing(world, personas, api, change, field):
    from portal.audit.models import AuditEvent

    r = api(personas["coordinator"]).post(_url(world["study"]), {**TINY, **change}, format="json")
    assert r.status_code == 400, r.json()
    assert field in r.json()["errors"], r.json()
    assert _grid_count() == 0
    assert not AuditEvent.objects.filter(action="grid.start").exists()


@pytest.mark.parametrize("options, field, words", [
    ({"seeds": True}, "seeds", "whole number"),
    ({"rounds": 2.5}, "rounds", "whole number"),
    ({"federations": []}, "federations", "at least one"),
    ({"federations": [3, 7]}, "federations", "7 not one of"),
    ({"cases": "best,worst"}, "cases", "not one of"),
    ({"isolated": "yes"}, "isolated", "true or false"),
    ({"source": "synthetic"}, "synthetic_cohort", "released synthetic cohort"),
])
def test_the_service_validates_every_option_itself(world, personas, options, field, words):
    from portal.experiments import services

    with pytest.raises(services.GridRefused) as exc:
        services.start_grid(personas["coordinator"], world["study"], **{**TINY, **options})
    assert exc.value.field == field and words in str(exc.value), str(exc.value)
    assert _grid_count() == 0


def test_only_released_cohorts_of_the_same_study_with_the_endpoint_columns(world, personas, api):
    from fl_engine.cohort import generate_mds_cohort

    coord = api(personas["coordinator"])
    df = generate_mds_cohort(400, 1)
    unreleased = _released_cohort(world["run"], df, released=False)
    _, other_run = _other_study(personas, world)
    foreign = _released_cohort(other_run, df)
    no_endpoint = _released_cohort(world["run"], df.drop(columns=["os_months", "os_event"]))
    for cohort, words in ((unreleased, "has not been released"), (foreign, "belongs to another study"),
                          (no_endpoint, "os_months, os_event"), (world["released"], "at least 300")):
        r = coord.post(_url(world["study"]), {**TINY, "source": "synthetic", "synthetic_cohort": cohort.pk},
                       format="json")
        assert r.status_code == 400, r.json()
        assert "synthetic_cohort" in r.json()["errors"] and words in r.json()["detail"], r.json()
    assert _grid_count() == 0


def test_the_generated_cohort_is_mds_only(world, personas):
    from portal.experiments import services

    study = world["study"]
    study.use_case = "AML"
    study.save()
    with pytest.raises(services.GridRefused) as exc:
        services.start_grid(personas["coordinator"], study, **TINY)
    assert exc.value.field == "source" and "MDS only" in str(exc.value)


@pytest.mark.parametrize("role", ["clinician", "data_manager", "node_operator", "administrator", "norole"])
def test_roles_that_cannot_start_runs_get_403_and_nothing_is_stored(world, personas, api, role):
    r = api(personas[role]).post(_url(world["study"]), TINY, format="json")
    assert r.status_code == 403, (role, r.status_code)
    assert _grid_count() == 0


def test_start_is_audited_queued_after_commit_and_one_at_a_time(world, personas, api,
                                                                 django_capture_on_commit_callbacks):
    from portal.audit.models import AuditEvent
    from portal.experiments.models import GridRun

    coord = api(personas["coordinator"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = coord.post(_url(world["study"]), TINY, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["status"] == "queued" and body["source_label"] == "generated MDS cohort n=400, seed 3"
    assert len(callbacks) == 1
    grid = GridRun.objects.get(pk=body["id"])
    # the study's feature groups map onto the grid; its DeepSurv settings are used
    assert grid.config["feature_groups"] == ["clinical", "cytogenetic"] and grid.config["model"] == "deepsurv"
    assert AuditEvent.objects.filter(action="grid.start", object_id=str(grid.pk)).exists()
    again = coord.post(_url(world["study"]), TINY, format="json")
    assert again.status_code == 409 and "already queued or running" in again.json()["detail"]
    # viewers list and read it; a node operator of another hospital does not see the study
    listed = api(personas["clinician"]).get(_url(world["study"]))
    assert listed.status_code == 200 and [g["id"] for g in listed.json()] == [grid.pk]
    assert api(personas["clinician"]).get(f"/api/grid-runs/{grid.pk}/").status_code == 200
    assert api(personas["outsider"]).get(f"/api/grid-runs/{grid.pk}/").status_code == 404
    assert api(personas["outsider"]).get(_url(world["study"])).status_code == 404
    csv = coord.get(f"/api/grid-runs/{grid.pk}/results.csv")
    assert csv.status_code == 409 and "queued" in csv.json()["detail"]


def test_cancel_a_queued_grid_and_a_running_one_between_settings(world, personas, api, monkeypatch):
    from portal.experiments import services
    from portal.experiments.models import GridRun

    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    assert api(personas["clinician"]).post(f"/api/grid-runs/{grid.pk}/cancel/").status_code == 403
    r = api(personas["coordinator"]).post(f"/api/grid-runs/{grid.pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert services.execute_grid(grid.pk) == "cancelled"  # the queued task then does nothing
    assert api(personas["coordinator"]).post(f"/api/grid-runs/{grid.pk}/cancel/").status_code == 409

    # running: the request arrives while the task works; the next log line stops it
    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    load = services.load_grid_cohort

    def load_then_cancel(g):
        assert GridRun.objects.get(pk=g.pk).status == "running"
        assert api(personas["coordinator"]).post(f"/api/grid-runs/{g.pk}/cancel/").json()["status"] == "running"
        return load(g)

    monkeypatch.setattr(services, "load_grid_cohort", load_then_cancel)
    assert services.execute_grid(grid.pk) == "cancelled"
    grid.refresh_from_db()
    assert grid.status == "cancelled" and grid.results == {} and "cohort loaded" in grid.progress


def test_a_grid_whose_worker_vanished_does_not_block_the_study(world, personas):
    from datetime import timedelta

    from django.utils import timezone

    from portal.experiments import services
    from portal.experiments.models import GridRun

    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    started = timezone.now() - timedelta(seconds=services.GRID_TIME_LIMIT_S + 3600)
    GridRun.objects.filter(pk=grid.pk).update(status="running", started_at=started)
    second = services.start_grid(personas["coordinator"], world["study"], **TINY)
    grid.refresh_from_db()
    assert grid.status == "failed" and "stopped without a result" in grid.error
    assert second.status == "queued"


def test_a_grid_whose_worker_died_is_taken_over_and_finishes(world, personas, monkeypatch):
    """The one lifecycle for grids: a worker that stops beating is replaced (the reconciler queues
    the grid again; the next delivery takes it over and computes it from the beginning); a
    delivery while the worker is alive does nothing; after GRID_MAX_ATTEMPTS workers it fails."""
    from datetime import timedelta

    from django.utils import timezone

    from portal.experiments import services, tasks
    from portal.experiments.models import GridRun

    sent = []
    monkeypatch.setattr(tasks.execute_grid, "delay", lambda pk: sent.append(pk))
    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    # a worker claimed it and is computing: a second delivery of the message leaves it alone
    GridRun.objects.filter(pk=grid.pk).update(status="running", task_id="w1", attempts=1,
                                               started_at=timezone.now(), heartbeat_at=timezone.now())
    assert services.execute_grid(grid.pk, "dup") == "running"
    assert services.reconcile_grids()["taken_over"] == 0 and sent == []
    # the worker died: no heartbeat for longer than GRID_STALE_S
    silent = timezone.now() - timedelta(seconds=services.GRID_STALE_S + 5)
    GridRun.objects.filter(pk=grid.pk).update(heartbeat_at=silent)
    assert services.reconcile_grids()["taken_over"] == 1 and sent == [grid.pk]
    assert services.reconcile_grids()["taken_over"] == 0  # queued once per stale period
    assert services.execute_grid(grid.pk, "w2") == "finished"
    grid.refresh_from_db()
    assert grid.attempts == 2 and "restarted: the worker computing it stopped" in grid.progress
    assert "seeds_done" not in grid.results  # the finished grid's results replace the kept seeds
    assert grid.results["summary"] and grid.finished_at and grid.status_changed_at

    # a grid whose workers keep dying is failed with the reason, not retried for ever
    other = services.start_grid(personas["coordinator"], world["study"], **TINY)
    GridRun.objects.filter(pk=other.pk).update(status="running", task_id="w3", attempts=services.GRID_MAX_ATTEMPTS,
                                                started_at=silent, heartbeat_at=silent)
    assert services.reconcile_grids()["failed"] == 1
    other.refresh_from_db()
    assert other.status == "failed" and "stopped 3 times" in other.error
    # and a cancel waiting on a grid whose worker is gone takes effect
    third = services.start_grid(personas["coordinator"], world["study"], **TINY)
    GridRun.objects.filter(pk=third.pk).update(status="running", task_id="w4", attempts=1, cancel_requested=True,
                                                started_at=silent, heartbeat_at=silent)
    assert services.reconcile_grids()["cancelled"] == 1
    assert GridRun.objects.get(pk=third.pk).status == "cancelled"


@pytest.mark.slow
def test_each_seed_is_kept_as_it_finishes_and_a_takeover_does_not_compute_it_again(world, personas, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from portal.experiments import services, tasks
    from portal.experiments.models import GridRun

    monkeypatch.setattr(tasks.execute_grid, "delay", lambda pk: None)
    two = {**TINY, "seeds": 2, "cases": ["best"], "isolated": False, "n_boot": 0}
    first = services.start_grid(personas["coordinator"], world["study"], **two)
    seen = []
    real_keeper = services._seed_keeper

    def watching(grid_id, owner, cfg, done):  # what is stored when each seed finishes
        keep = real_keeper(grid_id, owner, cfg, done)

        def wrapped(seed, *rest):
            keep(seed, *rest)
            seen.append(sorted(services.stored_seeds(GridRun.objects.get(pk=grid_id))))
        return wrapped

    monkeypatch.setattr(services, "_seed_keeper", watching)
    assert services.execute_grid(first.pk, "w1") == "finished"
    assert seen == [["0"], ["0", "1"]]  # seed 0 was stored before seed 1 was computed
    first.refresh_from_db()
    stored0 = [r for r in first.results["per_seed"] if r["seed"] == 0]
    # a second grid whose first worker finished seed 0 and died: the next one keeps seed 0
    second = services.start_grid(personas["coordinator"], world["study"], **two)
    marked = [{**r, "harrell_c": 0.5 if r["setting"] == "centralised" else r["harrell_c"]} for r in stored0]
    silent = timezone.now() - timedelta(seconds=services.GRID_STALE_S + 5)
    GridRun.objects.filter(pk=second.pk).update(
        status="running", task_id="w2", attempts=1, started_at=silent, heartbeat_at=silent,
        results={"seeds_done": {"0": {"results": marked, "rounds": [], "km": first.results["km"]}}})
    seen.clear()
    assert services.execute_grid(second.pk, "w3") == "finished"
    second.refresh_from_db()
    assert seen == [["0", "1"]]  # only seed 1 was computed
    assert "seed(s) 0 already computed, kept" in second.progress
    central = {r["seed"]: r["harrell_c"] for r in second.results["per_seed"]
               if r["setting"] == "centralised" and r["eval"] == "global"}
    assert central[0] == 0.5 and central[1] != 0.5 and second.results["seeds"] == [0, 1]


def test_a_grid_storing_its_results_cannot_be_cancelled_and_a_final_grid_never_moves(world, personas, api):
    from portal.experiments import services
    from portal.experiments.models import GridRun

    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    GridRun.objects.filter(pk=grid.pk).update(status="concluding")
    r = api(personas["coordinator"]).post(f"/api/grid-runs/{grid.pk}/cancel/")
    assert r.status_code == 409 and "being stored" in r.json()["detail"]
    GridRun.objects.filter(pk=grid.pk).update(status="finished")
    for to in ("running", "failed", "cancelled", "queued"):
        assert services.move(grid.pk, to) is None
    assert GridRun.objects.get(pk=grid.pk).status == "finished"


def test_a_failure_is_stored_with_its_error(world, personas):
    from portal.experiments import services

    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    grid.config = {**grid.config, "endpoint": "no_such_endpoint"}
    grid.save()
    assert services.execute_grid(grid.pk) == "failed"
    grid.refresh_from_db()
    assert grid.status == "failed" and "no_such_endpoint" in grid.error and grid.finished_at


def test_the_page_offers_the_form_to_coordinators_only(world, personas, client):
    url = f"/studies/{world['study'].pk}/compare/"
    client.force_login(personas["coordinator"])
    html = client.get(url).content.decode()
    assert "Experiment grid (pooled data: generated or released synthetic cohorts)" in html
    assert 'id="grid-start-form"' in html and "python -m fl_engine.experiments.grid" in html
    client.force_login(personas["clinician"])
    html = client.get(url).content.decode()
    assert "Experiment grid (pooled data" in html and 'id="grid-start-form"' not in html
    assert client.post(f"/studies/{world['study'].pk}/grid/", {}).status_code == 403


def test_the_page_form_starts_a_grid_or_says_why_not(world, personas, client):
    from portal.experiments.models import GridRun

    client.force_login(personas["coordinator"])
    form = {"source": "generated", "n": 400, "seed": 1, "model": "deepsurv", "seeds": 1, "rounds": 2,
            "federations": ["3"], "cases": ["best"], "isolated": "on", "n_boot": 0}
    bad = client.post(f"/studies/{world['study'].pk}/grid/", {**form, "rounds": 99}, follow=True)
    assert "Experiment grid not started" in bad.content.decode() and _grid_count() == 0
    ok = client.post(f"/studies/{world['study'].pk}/grid/", form, follow=True)
    assert "queued" in ok.content.decode()
    grid = GridRun.objects.get()
    assert grid.config["federations"] == [3] and grid.config["cases"] == ["best"] and grid.generated_n == 400
    assert f'data-grid-status="{grid.pk}"' in ok.content.decode()


# --- real execution (tiny grids) --------------------------------------------------------------

def _assert_finished_grid(grid):
    summary = grid.results["summary"]
    json.dumps(grid.results, allow_nan=False)  # NaN never reaches the JSON column
    glob = {(r["setting"], r["case"]): r for r in summary if r["eval"] == "global"}
    for key in [("centralised", "best"), ("federated_3", "best"), ("federated_3", "worst")]:
        assert key in glob, key
        assert 0.4 < glob[key]["harrell_c"] < 1, (key, glob[key])
        assert glob[key]["lo"] <= glob[key]["harrell_c"] <= glob[key]["hi"], glob[key]
        assert glob[key]["seeds"] == 1
        assert 0 < glob[key]["ibs"] < 0.5 and 0 < glob[key]["ibs_km"] < 0.5, glob[key]
    iso = [r for r in summary if r["setting"] == "isolated_3"]
    assert {r["trained_on"] for r in iso} == {"node1", "node2", "node3"}
    assert {r["case"] for r in iso} == {"best", "worst"}
    assert grid.results["rounds"] and {r["setting"] for r in grid.results["rounds"]} == {
        "federated_3", "isolated_3", "cox_federated_3"}
    for key in [("cox_centralised", "best"), ("cox_federated_3", "best")]:  # the Cox baseline, same splits
        assert 0.4 < glob[key]["harrell_c"] < 1 and glob[key]["n"] == glob[("centralised", "best")]["n"], glob[key]
    return glob


@pytest.mark.slow
def test_a_tiny_generated_grid_runs_and_reaches_api_csv_and_page(world, personas, api, client):
    from portal.experiments import services

    grid = services.start_grid(personas["coordinator"], world["study"], **TINY)
    assert services.execute_grid(grid.pk) == "finished"
    grid.refresh_from_db()
    assert grid.status == "finished" and grid.error == "" and grid.started_at and grid.finished_at
    glob = _assert_finished_grid(grid)
    assert 0.4 < glob[("ipss_m", "best")]["harrell_c"] < 1
    assert glob[("ipss_m", "best")]["ibs"] is None  # categories, no survival curves
    panels = {p["title"]: p for p in grid.results["km"]["panels"]}
    model = panels["Model (centralised): predicted risk tertiles"]["groups"]
    assert [g["label"] for g in model] == ["Low predicted risk", "Intermediate predicted risk", "High predicted risk"]
    assert all(g["n"] >= 5 and len(g["times"]) == len(g["survival"]) and g["survival"][0] <= 1 for g in model)
    assert "IPSS-M" in panels and "IPSS-R" in panels
    assert all(g["n"] >= 5 for p in panels.values() for g in p["groups"])

    detail = api(personas["clinician"]).get(f"/api/grid-runs/{grid.pk}/")
    assert detail.status_code == 200 and detail.json()["results"]["summary"] == grid.results["summary"]
    csv = api(personas["clinician"]).get(f"/api/grid-runs/{grid.pk}/results.csv")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    per_seed = pd.read_csv(io.BytesIO(csv.content))
    assert list(per_seed.columns)[:5] == ["seed", "setting", "case", "eval", "trained_on"]
    assert len(per_seed) == len(grid.results["per_seed"]) and set(per_seed.seed) == {0}
    central = per_seed[(per_seed.setting == "centralised") & (per_seed["eval"] == "global")]
    assert central.harrell_c.iloc[0] == pytest.approx(glob[("centralised", "best")]["harrell_c"])
    assert central.ibs.iloc[0] == pytest.approx(glob[("centralised", "best")]["ibs"])

    client.force_login(personas["clinician"])
    page = client.get(f"/studies/{world['study'].pk}/compare/")
    html = page.content.decode()
    assert 'id="grid-global-table"' in html and "Centralised (all training patients pooled)" in html
    assert "Federated, 3 nodes" in html and "generated MDS cohort n=400, seed 3" in html
    assert "Cox baseline, centralised" in html and "Cox baseline, federated, 3 nodes" in html
    worst_ipssr = glob[("ipss_r_3", "worst")]  # a hospital without karyotypes: IPSS-R on few patients
    assert worst_ipssr["coverage"] < 0.8 and "low coverage: not comparable" in html
    # each simulated hospital's test rows: the Cox baseline and the conventional scores beside the model
    assert "Conventional scores, node's test rows" in html and "Cox baseline, node's test rows" in html
    assert "IPSS-M: " in html and "not computable on this node's patients" in html
    assert f"{glob[('centralised', 'best')]['harrell_c']:.3f}" in html
    assert f"IBS {glob[('centralised', 'best')]['ibs']:.3f} vs KM {glob[('centralised', 'best')]['ibs_km']:.3f}" in html
    assert 'class="grid-node-table" data-k="3" data-case="worst"' in html and 'id="grid-km-3"' in html
    assert client.get(f"/grid-runs/{grid.pk}/results.csv").status_code == 200
    report = client.get(f"/studies/{world['study'].pk}/report/?download=1").content.decode()
    assert 'id="report-grid"' in report and "generated MDS cohort n=400, seed 3" in report
    assert f"{glob[('centralised', 'best')]['harrell_c']:.3f}" in report


@pytest.mark.slow
def test_a_grid_on_a_released_synthetic_cohort_of_the_study(world, personas):
    from fl_engine.cohort import generate_mds_cohort
    from portal.experiments import services
    from portal.experiments.selectors import source_label

    cohort = _released_cohort(world["run"], generate_mds_cohort(400, 11))
    grid = services.start_grid(personas["coordinator"], world["study"], source="synthetic",
                               synthetic_cohort=cohort.pk, seeds=1, rounds=2, federations=[3],
                               cases=["best", "worst"], n_boot=20)
    assert grid.generated_n is None and grid.synthetic_cohort_id == cohort.pk
    assert services.execute_grid(grid.pk) == "finished", grid.error
    grid.refresh_from_db()
    _assert_finished_grid(grid)
    assert grid.results["cohort_rows"] == 400
    label = source_label(grid)
    assert f"synthetic cohort #{cohort.pk} from generation run #{world['run'].pk}" in label and "released" in label


def test_a_model_below_chance_is_called_out_on_the_page(world, personas, client):
    # An under-trained model (C < 0.5 on the global test set) must not sit silently in the table.
    from portal.experiments.models import GridRun
    from portal.experiments.selectors import below_chance

    row = {"eval": "global", "seeds": 1, "n": 40, "lo": None, "hi": None, "sd": None, "rounds_used": 2}
    grid = GridRun.objects.create(
        study=world["study"], source="generated", generated_n=400, generated_seed=0, status="finished",
        created_by=personas["coordinator"],
        config={"model": "savae", "seeds": 1, "rounds": 2, "federations": [3], "cases": ["best"],
                "isolated": False, "n_boot": 0},
        results={"summary": [{**row, "setting": "centralised", "case": "best", "trained_on": "centralised",
                              "harrell_c": 0.41},
                             {**row, "setting": "federated_3", "case": "best", "trained_on": "federated_3",
                              "harrell_c": 0.62},
                             {**row, "setting": "ipss_m", "case": "best", "trained_on": "ipss_m",
                              "harrell_c": 0.45}],
                 "rounds": [], "km": {"panels": []}})
    assert below_chance(grid) == ["Centralised (all training patients pooled) (best case)"]
    client.force_login(personas["clinician"])
    html = client.get(f"/studies/{world['study'].pk}/compare/").content.decode()
    assert 'id="grid-below-chance"' in html and "Centralised (all training patients pooled)" in html
    grid.results["summary"][0]["harrell_c"] = 0.55
    grid.save()
    assert 'id="grid-below-chance"' not in client.get(f"/studies/{world['study'].pk}/compare/").content.decode()


# --- pushed progress --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_grid_status_and_progress_are_pushed_to_authorised_viewers(world, personas):
    """Through the real channel layer: a clinician's socket on a grid receives "running", the
    progress lines as they are written and the final status; a user without a role is refused."""
    import asyncio
    import threading

    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from portal.asgi import application
    from portal.experiments import services

    grid = services.start_grid(personas["coordinator"], world["study"], **{**TINY, "cases": ["best"]})

    async def scenario():
        origin = [(b"origin", b"http://127.0.0.1")]
        ws = WebsocketCommunicator(application, f"/ws/grid-runs/{grid.pk}/", headers=origin)
        ws.scope["user"] = personas["clinician"]
        connected, _ = await ws.connect()
        assert connected
        assert await database_sync_to_async(services.execute_grid)(grid.pk) == "finished"
        events = []
        while not events or events[-1] != ("status", "finished"):
            msg = await ws.receive_json_from(timeout=10)
            events.append((msg["event"], msg["data"]["status"]))
            if msg["event"] == "progress":
                assert msg["data"]["line"].split(" ", 1)[1]  # "HH:MM:SS message"
        await ws.disconnect()
        assert events[:2] == [("status", "starting"), ("status", "running")], events
        assert events[-2:] == [("status", "concluding"), ("status", "finished")], events
        progress = [e for e in events if e[0] == "progress"]
        assert len(progress) >= 2 and all(s == "running" for _, s in progress), events
        denied = WebsocketCommunicator(application, f"/ws/grid-runs/{grid.pk}/", headers=origin)
        denied.scope["user"] = personas["norole"]
        connected, _ = await denied.connect()
        assert not connected

    errors: list = []

    def target():
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)
    # a thread of its own: a browser test earlier in the session may leave an event loop running
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "websocket scenario did not finish"
    if errors:
        raise errors[0]
    grid.refresh_from_db()
    assert grid.status == "finished" and grid.progress.count("\n") >= 2
