"""Synthetic-cohort generation runs in the portal, without Flower processes: the API and the
service (roles, refusals naming the field), the run config handed to the engine, the cohort a
finished run leaves (engine output from the in-process federation), Parquet download."""
import io
import json

import pytest

pytestmark = pytest.mark.django_db

FEATURES = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "TP53", "SF3B1"]


@pytest.fixture
def study(personas, approved_node, settings, tmp_path):
    from portal.datasets.models import Dataset
    from portal.studies.models import Study

    settings.MEDIA_ROOT = tmp_path / "media"
    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=300, feature_schema=FEATURES + ["os_months", "os_event"],
                                fingerprint="f" * 64)
    s = Study.objects.create(title="Synthetic MDS", use_case="MDS", owner=personas["coordinator"], min_nodes=1,
                             features=["age", "hb"], hyperparameters={"local_epochs": 1})
    s.datasets.add(ds)
    return s


def _approve(study, personas):
    from portal.studies import services

    services.decide_approval(personas["node_operator"], study, study.datasets.get(), "approved")


BODY = {"generator": "vae_bgm", "rounds": 2, "local_epochs": 3, "rows": 0, "features": FEATURES,
        "generator_params": {"hidden": 32}}


def test_only_coordinators_start_generation_and_approval_is_needed(study, personas, api,
                                                                    django_capture_on_commit_callbacks):
    url = f"/api/studies/{study.pk}/generation-runs/"
    for role in ("clinician", "data_manager", "node_operator"):
        assert api(personas[role]).post(url, BODY, format="json").status_code == 403, role
    coord = api(personas["coordinator"])
    refused = coord.post(url, BODY, format="json")
    assert refused.status_code == 409 and "approval" in refused.json()["detail"]
    _approve(study, personas)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        started = coord.post(url, BODY, format="json")
    assert started.status_code == 201, started.json()
    body = started.json()
    assert body["kind"] == "synthesis" and body["status"] == "queued" and body["rounds"] == 2
    assert body["config"]["generation"]["generator"] == "vae_bgm"
    assert body["page"] == f"/generation-runs/{body['id']}/"
    assert len(callbacks) == 1
    listed = api(personas["clinician"]).get(url)
    assert listed.status_code == 200 and [r["id"] for r in listed.json()] == [body["id"]]
    from portal.audit.models import AuditEvent
    assert AuditEvent.objects.filter(action="run.start_generation", object_id=str(body["id"])).exists()


@pytest.mark.parametrize("change, field", [
    ({"generator": "gan9000"}, "generator"),
    ({"generator_params": {"bogus": 1}}, "generator_params"),
    ({"rounds": 0}, "rounds"),
    ({"features": ["age", "not_a_column"]}, "features"),
])
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(study, personas, api, change, field):
    from portal.studies.models import Run

    _approve(study, personas)
    r = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/generation-runs/", {**BODY, **change},
                                          format="json")
    assert r.status_code == 400, r.json()
    assert field in r.json()["errors"], r.json()
    assert not Run.objects.filter(study=study).exists()


def test_flower_config_is_a_valid_synthesis_run_config(study, personas, client):
    from fl_engine.federation.config import parse_contract
    from portal.synthesis import services

    _approve(study, personas)
    run = services.start_generation_run(personas["coordinator"], study, generator="bayesian_network", rounds=1,
                                        local_epochs=1, rows=50, features=FEATURES,
                                        generator_params={"max_indegree": 2})
    cfg = parse_contract(services.flower_generation_config(run))
    assert (cfg.task, cfg.generator, cfg.synth_rows) == ("synthesis", "bayesian_network", 50)
    assert cfg.generator_params == {"max_indegree": 2} and list(cfg.features) == FEATURES
    assert cfg.events_url.endswith(f"/api/runs/{run.pk}/events/")
    assert cfg.study_id == str(study.pk) and [p["node"] for p in cfg.participants] == ["hosp-a-node"]
    client.force_login(personas["coordinator"])
    page = client.get(f"/generation-runs/{run.pk}/")  # queued: no point yet, the cancel button
    assert page.status_code == 200 and b"Cancel this run" in page.content
    assert page.context["chart"]["done"] == 0


def test_sd_sharing_is_accepted_as_a_one_round_run(study, personas, api, client):
    from fl_engine.federation.config import parse_contract
    from portal.synthesis import services

    _approve(study, personas)
    body = {**BODY, "generator": "sd_sharing", "rounds": 5, "generator_params": {"kind": "vae_bgm", "hidden": 32}}
    url = f"/api/studies/{study.pk}/generation-runs/"
    bad = api(personas["coordinator"]).post(url, {**body, "generator_params": {"kind": "gan9000"}}, format="json")
    assert bad.status_code == 400 and "generator_params" in bad.json()["errors"], bad.json()
    r = api(personas["coordinator"]).post(url, body, format="json")
    assert r.status_code == 201, r.json()
    out = r.json()
    assert out["rounds"] == 1  # the engine runs one round; the run page counts against it
    assert out["config"]["generation"]["generator_params"] == {"kind": "vae_bgm", "hidden": 32}
    from portal.studies.models import Run
    cfg = parse_contract(services.flower_generation_config(Run.objects.get(pk=out["id"])))
    assert (cfg.generator, cfg.generator_params["kind"]) == ("sd_sharing", "vae_bgm")
    client.force_login(personas["coordinator"])
    page = client.get(f"/generation-runs/{out['id']}/")
    assert page.status_code == 200 and page.context["chart"]["rounds"] == 1
    assert b"Synthetic-data sharing runs one round" in page.content
    study_page = client.get(f"/studies/{study.pk}/")
    assert b'value="sd_sharing"' in study_page.content
    from portal.synthesis.forms import GenerationForm
    form = GenerationForm({"generator": "sd_sharing", "rounds": 3, "local_epochs": 1, "rows": 0,
                           "generator_params": '{"kind": "bayesian_network"}'})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["generator_params"] == {"kind": "bayesian_network"}


def _finished_generation(study, personas, tmp_path):
    """A generation run that the engine ran in process; its events (as the ServerApp would post
    them) ingested through the lifecycle, so the run is concluding with its cohort's files."""
    import numpy as np

    from fl_engine.cohort import generate_mds_cohort
    from fl_engine.federation.config import parse_contract
    from fl_engine.federation.synthesis import run_synthesis_in_process
    from portal.studies import lifecycle
    from portal.studies import services as study_services
    from portal.synthesis import services

    _approve(study, personas)
    run = services.start_generation_run(personas["coordinator"], study, generator="bayesian_network", rounds=1,
                                        local_epochs=1, features=FEATURES, generator_params={"max_indegree": 2})
    df = generate_mds_cohort(300, seed=2)
    idx = np.random.default_rng(0).permutation(len(df))
    contract = services.flower_generation_config(run)
    events = tmp_path / "events.jsonl"
    contract["reporting"].update(events_url="", metrics_path=str(events))
    contract["federation"]["min_nodes"] = 2
    run_synthesis_in_process(parse_contract(contract), {"A": df.iloc[idx[:170]], "B": df.iloc[idx[170:]]})
    lifecycle.transition(run.pk, "starting")
    lifecycle.transition(run.pk, "running", flower_run_id="1")
    for line in events.read_text().splitlines():
        assert lifecycle.ingest_event(run.pk, json.loads(line))
    run.refresh_from_db()
    assert run.status == "concluding"
    return run


def test_finished_run_becomes_an_unreleased_cohort_with_report_and_card(study, personas, api, client, tmp_path):
    from portal.synthesis import services
    from portal.synthesis.models import SyntheticCohort

    from portal.studies import lifecycle

    run = _finished_generation(study, personas, tmp_path)
    assert lifecycle.conclude(run.pk) == "finished"
    cohort = SyntheticCohort.objects.get(run=run)
    files = lifecycle.artefacts(run)
    assert services.conclude_generation(run, files).pk == cohort.pk  # concluding twice stores one cohort
    assert SyntheticCohort.objects.filter(run=run).count() == 1
    assert not cohort.released and cohort.row_count > 0
    assert cohort.validation_report["gate"]["checks"] and 0 <= cohort.validation_report["csf"] <= 1
    assert cohort.data_card["generator"] == "bayesian_network" and cohort.data_card["run"] == run.pk
    assert cohort.data_card["rows"] == cohort.row_count
    # the live page draws the stored rounds: federated + one line per node alone
    client.force_login(personas["clinician"])
    page = client.get(f"/generation-runs/{run.pk}/")
    assert page.status_code == 200
    chart = page.context["chart"]
    assert set(chart["scores"]["csf"]) == {"federated", "alone:A", "alone:B"}
    assert b"bench/synthetic_mds.py" in page.content
    assert client.get(f"/runs/{run.pk}/").status_code == 302  # the survival page sends here
    detail = client.get(f"/cohorts/{cohort.pk}/")
    assert detail.status_code == 200 and "km" in detail.context["plots"]


def test_parquet_download_released_only_with_data_card_and_audited(study, personas, client, tmp_path):
    import pyarrow.parquet as pq

    from portal.audit.models import AuditEvent
    from portal.synthesis import services
    from portal.synthesis.models import SyntheticCohort

    from portal.studies import lifecycle

    run = _finished_generation(study, personas, tmp_path)
    cohort = services.conclude_generation(run, lifecycle.artefacts(run))
    client.force_login(personas["data_manager"])
    url = f"/cohorts/{cohort.pk}/download.parquet"
    assert client.get(url).status_code == 403  # not released
    assert AuditEvent.objects.filter(action="cohort.download_refused", object_id=str(cohort.pk)).exists()
    # release as if the gate had passed (the gate itself is tested in tests/generative)
    SyntheticCohort.objects.filter(pk=cohort.pk).update(released=True)
    r = client.get(url)
    assert r.status_code == 200 and r["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == cohort.row_count and "os_months" in table.column_names
    card = json.loads(table.schema.metadata[b"fedhaem.data_card"])
    assert card["generator"] == "bayesian_network"
    assert AuditEvent.objects.filter(action="cohort.download", object_id=str(cohort.pk),
                                     detail__format="parquet").count() == 1
    client.force_login(personas["clinician"])
    assert client.get(url).status_code == 403  # the role cannot download
    api_url = f"/api/cohorts/{cohort.pk}/download-parquet/"
    client.force_login(personas["data_manager"])
    assert client.get(api_url).status_code == 200


def test_study_page_form_for_coordinators_only(study, personas, client):
    from portal.studies.models import Run

    client.force_login(personas["clinician"])
    assert b"Generate synthetic cohort" not in client.get(f"/studies/{study.pk}/").content
    client.force_login(personas["coordinator"])
    assert b"Generate synthetic cohort" in client.get(f"/studies/{study.pk}/").content
    r = client.post(f"/studies/{study.pk}/generate/", {"generator": "nope", "rounds": 2, "local_epochs": 1, "rows": 0})
    assert r.status_code == 302 and not Run.objects.exists()
    _approve(study, personas)
    r = client.post(f"/studies/{study.pk}/generate/", {"generator": "vae_bgm", "rounds": 2, "local_epochs": 1,
                                                        "rows": 0, "generator_params": ""})
    # the study's default columns (the MDS core set) are missing from this dataset: refused, named
    assert r.status_code == 302 and not Run.objects.exists()
