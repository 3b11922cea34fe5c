"""A study's privacy options: the form (errors next to fields), the API (400 naming the field),
the pages, and the flat values the Flower run receives (checked by the engine's own parser)."""
import pytest

from tests.portal.pages_world import build_world

pytestmark = pytest.mark.django_db

STRICT = {"min_patients_per_node": 20, "min_cell_count": 10, "dp_enabled": False, "dp_clip_norm": 1.0,
          "dp_noise_multiplier": 1.0}


@pytest.fixture
def world(personas, p384_public_key, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return build_world(personas["administrator"], personas["coordinator"], personas["node_operator"],
                       p384_public_key)


@pytest.fixture
def coordinator(client, personas):
    client.force_login(personas["coordinator"])
    return client


def _form(ds, **over):
    data = {"title": "MDS OS private", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
            "datasets": [ds.pk], "model_kind": "deepsurv", "hp_hidden_layers": "32, 16", "rounds": "4",
            "fraction_nodes": "1.0", "min_nodes": "1", "strategy": "fedavg", "intent": "draft"}
    data.update(over)
    return data


def test_a_study_saved_without_touching_privacy_gets_the_strict_defaults(world, coordinator):
    from portal.studies.models import Study

    assert world["study"].privacy == STRICT  # created through the service without privacy
    form = coordinator.get("/studies/new/")
    html = form.content.decode()
    for field in ("priv_min_patients", "priv_min_cell", "priv_dp_enabled", "priv_dp_clip_norm", "priv_dp_noise"):
        assert f'for="id_{field}"' in html, field  # labelled inputs
    assert form.context["form"]["priv_min_patients"].value() == 20
    r = coordinator.post("/studies/new/", _form(world["dataset"]))
    assert r.status_code == 302
    assert Study.objects.get(title="MDS OS private").privacy == STRICT


def test_the_form_stores_privacy_options_and_shows_them(world, coordinator):
    from portal.studies.models import Study

    r = coordinator.post("/studies/new/", _form(world["dataset"], priv_min_patients="50", priv_min_cell="5",
                                                priv_dp_enabled="on", priv_dp_clip_norm="0.5", priv_dp_noise="1.2"))
    assert r.status_code == 302, r.context["form"].errors if r.context else r
    study = Study.objects.get(title="MDS OS private")
    assert study.privacy == {"min_patients_per_node": 50, "min_cell_count": 5, "dp_enabled": True,
                             "dp_clip_norm": 0.5, "dp_noise_multiplier": 1.2}
    page = coordinator.get(f"/studies/{study.pk}/").content.decode()
    assert "50 patients" in page and "5 patients or events" in page and "clipped to L2 norm 0.5" in page
    report = coordinator.get(f"/studies/{study.pk}/report/").content.decode()
    assert "50 patients" in report and "noise multiplier 1.2" in report
    edit = coordinator.get(f"/studies/{study.pk}/edit/").context["form"]
    assert edit.initial["priv_min_patients"] == 50 and edit.initial["priv_dp_enabled"] is True
    clone = coordinator.get(f"/studies/{study.pk}/clone/").context["form"]
    assert clone.initial["priv_dp_clip_norm"] == 0.5


def test_bad_privacy_values_are_shown_next_to_their_field_and_nothing_is_saved(world, coordinator):
    from portal.studies.models import Study

    before = Study.objects.count()
    r = coordinator.post("/studies/new/", _form(world["dataset"], priv_min_cell="0", priv_dp_enabled="on",
                                                priv_dp_clip_norm="-1", priv_dp_noise="-0.5"))
    assert r.status_code == 200 and Study.objects.count() == before
    errors = r.context["form"].errors
    assert {"priv_min_cell", "priv_dp_clip_norm", "priv_dp_noise"} <= set(errors)
    assert "priv_min_patients" not in errors
    html = r.content.decode()
    assert 'id="id_priv_min_cell_error"' in html and 'id="id_priv_dp_clip_norm_error"' in html
    # an edit with a bad value leaves the stored options alone
    study = world["study"]
    r = coordinator.post(f"/studies/{study.pk}/edit/", _form(world["dataset"], priv_min_patients="0"))
    assert "priv_min_patients" in r.context["form"].errors
    study.refresh_from_db()
    assert study.privacy == STRICT


def test_the_api_reads_and_writes_privacy_and_names_the_bad_field(world, personas, api):
    c = api(personas["coordinator"])
    payload = {"title": "API study", "use_case": "MDS", "endpoint": "os", "datasets": [world["dataset"].pk],
               "feature_groups": ["clinical"], "model_kind": "deepsurv", "privacy": {"dp_enabled": True}}
    r = c.post("/api/studies/", payload, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["privacy"] == {**STRICT, "dp_enabled": True}
    url = f"/api/studies/{r.json()['id']}/"
    # options left out keep their value
    r = c.patch(url, {"privacy": {"min_cell_count": 15}}, format="json")
    assert r.status_code == 200 and r.json()["privacy"] == {**STRICT, "dp_enabled": True, "min_cell_count": 15}
    for bad, name in (({"min_cell_count": 0}, "min_cell_count"), ({"dp_clip_norm": "wide"}, "dp_clip_norm"),
                      ({"dp_noise_multiplier": -1}, "dp_noise_multiplier"), ({"k_anonymity": 5}, "k_anonymity"),
                      (["dp_enabled"], "privacy")):
        r = c.patch(url, {"privacy": bad}, format="json")
        assert r.status_code == 400, bad
        body = r.json()
        assert "privacy" in body["errors"] and name in body["detail"], body
    assert c.get(url).json()["privacy"] == {**STRICT, "dp_enabled": True, "min_cell_count": 15}


def test_the_flower_run_receives_the_options_as_flat_values(world, personas):
    from fl_engine.federation.config import parse_contract
    from portal.studies import services
    from portal.studies.models import Run

    study = world["study"]
    services.update_study(personas["coordinator"], study, {"privacy": {**STRICT, "dp_enabled": True,
                                                                       "dp_clip_norm": 0.3}})
    # the approval was given for other privacy options: it is stale until the hospital approves again
    with pytest.raises(services.RunRefused, match="approve again"):
        services.start_run(personas["coordinator"], study, 2)
    for ds in study.datasets.all():
        services.decide_approval(personas["node_operator"], study, ds, "approved")
    run = services.start_run(personas["coordinator"], study, 2)
    assert run.config["privacy"]["dp_clip_norm"] == 0.3  # pinned in the run's snapshot
    contract = services.flower_run_config(run)
    assert contract["privacy"] == {"min_patients_per_node": 20, "min_cell_count": 10, "dp_enabled": True,
                                   "dp_clip_norm": 0.3, "dp_noise_multiplier": 1.0}
    cfg = parse_contract(contract)  # strict: every section and setting is one the engine knows
    assert (cfg.min_patients_per_node, cfg.min_cell_count, cfg.dp_enabled, cfg.dp_clip_norm,
            cfg.dp_noise_multiplier) == (20, 10, True, 0.3, 1.0)
    # a run queued before privacy options existed gets the strict defaults
    old = Run.objects.create(study=study, rounds=1, created_by=personas["coordinator"],
                             config={k: v for k, v in run.config.items() if k != "privacy"})
    assert parse_contract(services.flower_run_config(old)).min_patients_per_node == 20
