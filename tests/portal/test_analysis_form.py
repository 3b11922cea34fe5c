"""The study form's Analysis section: saved to Study.analysis through the engine's validator
(fl_engine.analytics.settings), each error shown on its field, nothing saved when refused."""
import pytest

pytestmark = pytest.mark.django_db

FEATURES = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "TP53", "SF3B1"]


@pytest.fixture
def dataset(approved_node):
    from portal.datasets.models import Dataset

    node, _ = approved_node
    return Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                  patient_count=300, feature_schema=FEATURES + ["os_months", "os_event"],
                                  fingerprint="f" * 64)


def _post(dataset, **analysis):
    return {"title": "MDS description", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
            "datasets": [dataset.pk], "model_kind": "cox", "rounds": 5, "fraction_nodes": 1.0, "min_nodes": 1,
            "strategy": "fedavg", "priv_min_patients": 20, "priv_min_cell": 10, "intent": "draft", **analysis}


def test_analysis_section_is_saved_validated_and_completed(client, personas, dataset):
    from fl_engine.analytics.settings import validate_analysis
    from portal.studies.models import Study

    client.force_login(personas["coordinator"])
    page = client.get("/studies/new/")
    assert b"6. Analysis" in page.content and b'name="an_group_by"' in page.content
    import json
    import re
    found = re.search(r'<script id="analysis-columns-by-use-case" type="application/json">(.*?)</script>',
                      page.content.decode(), re.S)
    columns = json.loads(found.group(1))
    assert "genotype" in columns["SCD"]["group_by"] and "hospital" in columns["SCD"]["group_by"]
    assert "hb" in columns["MDS"]["numeric"] and "hb" not in columns["MDS"]["categorical"]
    r = client.post("/studies/new/", _post(dataset, an_enabled="on", an_analyses=["describe", "km", "cox"],
                                           an_group_by="sex", an_numeric="hb, plt", an_categorical="",
                                           an_covariates="age; hb", an_cox_stratified="on", an_time_step="3"))
    assert r.status_code == 302, r.context["form"].errors if r.context else r
    study = Study.objects.get(title="MDS description")
    a = study.analysis
    assert a == validate_analysis("MDS", "os", a)  # the complete validated dict, defaults filled in
    assert (a["analyses"], a["group_by"], a["numeric"], a["covariates"]) == (
        ["describe", "km", "cox"], "sex", ["hb", "plt"], ["age", "hb"])
    assert a["cox_stratified"] is True and a["time_step_months"] == 3.0
    assert a["categorical"] == validate_analysis("MDS", "os", None)["categorical"]  # empty = the default
    edit = client.get(f"/studies/{study.pk}/edit/")
    form = edit.context["form"]
    assert form.initial["an_enabled"] is True and form.initial["an_covariates"] == "age, hb"
    detail = client.get(f"/studies/{study.pk}/")
    assert b'id="start-analysis"' in detail.content


def test_without_the_box_the_study_has_no_analysis(client, personas, dataset):
    from portal.studies.models import Study

    client.force_login(personas["coordinator"])
    r = client.post("/studies/new/", _post(dataset, an_group_by="not_checked_anyway"))
    assert r.status_code == 302
    study = Study.objects.get(title="MDS description")
    assert study.analysis == {}
    assert b'id="start-analysis"' not in client.get(f"/studies/{study.pk}/").content


@pytest.mark.parametrize("fields, field, words", [
    ({"an_group_by": "not_a_column"}, "an_group_by", "not a column"),
    ({"an_group_by": "hb"}, "an_group_by", "is numeric"),
    ({"an_numeric": "hb, sex"}, "an_numeric", "sex"),
    ({"an_covariates": "age, bogus"}, "an_covariates", "bogus"),
    ({"an_time_step": "0"}, "an_time_step", "greater than 0"),
    ({"an_analyses": []}, "an_analyses", "at least one"),
])
def test_a_bad_analysis_setting_is_shown_on_its_field_and_nothing_is_saved(client, personas, dataset, fields,
                                                                          field, words):
    from portal.studies.models import Study

    client.force_login(personas["coordinator"])
    body = _post(dataset, an_enabled="on", an_analyses=["describe", "km", "logrank", "cox"])
    body.update(fields)
    r = client.post("/studies/new/", body)
    assert r.status_code == 200
    errors = r.context["form"].errors
    assert field in errors and words in " ".join(errors[field]), errors
    assert f'id="id_{field}_error"'.encode() in r.content or b"has-error" in r.content
    assert not Study.objects.filter(title="MDS description").exists()


def test_scd_endpoints_are_offered(client, personas):
    from portal.studies.forms import StudyForm

    form = StudyForm()
    assert "sev" in dict(form.fields["endpoint"].choices)


def test_the_api_sets_the_same_analysis_settings_as_the_form(api, personas, dataset):
    from fl_engine.analytics.settings import validate_analysis

    body = {"title": "MDS by API", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
            "datasets": [dataset.pk], "min_nodes": 1, "analysis": {"group_by": "bogus"}}
    coord = api(personas["coordinator"])
    bad = coord.post("/api/studies/", body, format="json")
    assert bad.status_code == 400 and "analysis" in bad.json()["errors"], bad.json()
    assert "group_by" in bad.json()["detail"]
    ok = coord.post("/api/studies/", {**body, "analysis": {"group_by": "sex", "covariates": ["age", "hb"]}},
                    format="json")
    assert ok.status_code == 201, ok.json()
    assert ok.json()["analysis"] == validate_analysis("MDS", "os", {"group_by": "sex", "covariates": ["age", "hb"]})
    cleared = coord.patch(f"/api/studies/{ok.json()['id']}/", {"analysis": {}}, format="json")
    assert cleared.status_code == 200 and cleared.json()["analysis"] == {}
    for wrong in (0, [], "none", ["group_by"]):  # not an object: 400 naming the field, nothing stored
        r = coord.patch(f"/api/studies/{ok.json()['id']}/", {"analysis": wrong}, format="json")
        assert r.status_code == 400 and "analysis" in r.json()["errors"], (wrong, r.json())
    # null (also as a form field, "null") means no analysis settings
    nulled = coord.post("/api/studies/", {**body, "analysis": "null", "feature_groups": "clinical"})
    assert nulled.status_code == 201 and nulled.json()["analysis"] == {}, nulled.json()


def test_a_clone_keeps_the_analysis_settings(api, personas, dataset):
    from portal.studies import services
    from portal.studies.models import Study

    source = services.create_study(personas["coordinator"], {
        "title": "Source", "use_case": "MDS", "endpoint": "os", "datasets": [dataset], "min_nodes": 1,
        "analysis": {"group_by": "sex"}})
    r = api(personas["coordinator"]).post(f"/api/studies/{source.pk}/clone/", format="json")
    assert r.status_code == 201
    assert Study.objects.get(pk=r.json()["id"]).analysis == {"group_by": "sex"}
