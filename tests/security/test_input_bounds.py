"""Bounds on every numeric and list input of a study: one hyper-parameter spec per model
(fl_engine.models.params) enforced by the API, the form, the model's clean() and the engine."""
import inspect

import pytest

from fl_engine.models import build_model
from fl_engine.models.params import PARAMS_BY_KIND, field_bounds


def _study(mds_dataset, **over):
    return {"title": "Bounds", "use_case": "MDS", "endpoint": "os", "features": ["age", "hb"],
            "model_kind": "deepsurv", "datasets": [mds_dataset.pk], "rounds": 3, "min_nodes": 1, **over}


@pytest.mark.django_db
@pytest.mark.parametrize("hidden", [[1000000000], [-5], [0], [32, True], [8] * 7, "32", [32.5]])
def test_api_refuses_out_of_bound_hidden_layers(api, personas, mds_dataset, hidden):
    from portal.studies.models import Study

    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, hyperparameters={"hidden": hidden}),
                                          format="json")
    assert r.status_code == 400, r.json()
    assert "hyperparameters" in r.json()["errors"] and "hidden" in r.json()["detail"]
    assert not Study.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("field,value", [("dropout", 0.95), ("lr", 0), ("lr", 2.0), ("batch_size", 10**12),
                                         ("local_epochs", 0), ("weight_decay", -1), ("lr", "NaN")])
def test_api_refuses_each_out_of_bound_number(api, personas, mds_dataset, field, value):
    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, hyperparameters={field: value}),
                                          format="json")
    assert r.status_code == 400 and field in r.json()["detail"], r.json()


@pytest.mark.django_db
def test_api_accepts_the_largest_allowed_network_and_stores_defaults(api, personas, mds_dataset):
    widest = field_bounds("deepsurv", "hidden")
    hidden = [widest["items"]["maximum"]] * widest["maxItems"]
    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, hyperparameters={"hidden": hidden}),
                                          format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["hyperparameters"]["hidden"] == hidden and r.json()["hyperparameters"]["dropout"] == 0.1


@pytest.mark.django_db
def test_api_patch_cannot_widen_the_bounds(api, personas, mds_dataset):
    coord = api(personas["coordinator"])
    pk = coord.post("/api/studies/", _study(mds_dataset), format="json").json()["id"]
    r = coord.patch(f"/api/studies/{pk}/", {"hyperparameters": {"hidden": [1000000000]}}, format="json")
    assert r.status_code == 400 and "hidden" in r.json()["detail"]
    from portal.studies.models import Study

    assert Study.objects.get(pk=pk).hyperparameters["hidden"] == [32, 32]  # unchanged


@pytest.mark.django_db
@pytest.mark.parametrize("features,why", [(["f%d" % i for i in range(100_000)], "2000"),
                                          (["f%d" % i for i in range(2001)], "2000"),
                                          (["x" * 121], "120")])
def test_api_refuses_oversized_feature_lists(api, personas, mds_dataset, features, why):
    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, features=features), format="json")
    assert r.status_code == 400
    assert "features" in r.json()["errors"] and why in r.json()["detail"]


@pytest.mark.django_db
def test_study_clean_refuses_oversized_features(personas):
    from django.core.exceptions import ValidationError

    from portal.studies.models import Study

    study = Study(title="t", use_case="MDS", owner=personas["coordinator"], features=["a"] * 2001)
    with pytest.raises(ValidationError) as err:
        study.full_clean()
    assert "features" in err.value.message_dict
    study.features = ["a"] * 2000
    study.full_clean()  # the bound itself is allowed


@pytest.mark.django_db
def test_form_refuses_huge_layers_next_to_the_field(mds_dataset):
    from portal.studies.forms import StudyForm
    from portal.datasets.models import Dataset

    data = {"title": "t", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
            "datasets": [mds_dataset.pk], "model_kind": "deepsurv", "hp_hidden_layers": "32, 1000000000",
            "rounds": "3", "fraction_nodes": "1.0", "min_nodes": "1", "strategy": "fedavg"}
    form = StudyForm(data, datasets_qs=Dataset.objects.all())
    assert not form.is_valid()
    assert "1024" in " ".join(form.errors["hp_hidden_layers"])
    form = StudyForm({**data, "model_kind": "savae", "hp_hidden_units": "-5"}, datasets_qs=Dataset.objects.all())
    assert not form.is_valid() and "hp_hidden_units" in form.errors


def test_form_hints_come_from_the_spec():
    from portal.studies.forms import StudyForm

    form = StudyForm()
    b = field_bounds("savae", "hidden")
    assert form.fields["hp_hidden_units"].widget.attrs["max"] == b["maximum"]
    assert str(b["maximum"]) in form.fields["hp_hidden_units"].help_text
    layers = field_bounds("deepsurv", "hidden")
    assert f"{layers['maxItems']} layers" in form.fields["hp_hidden_layers"].help_text


def test_openapi_schema_carries_the_spec_bounds(api, db):
    schema = api().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    hp = schema["components"]["schemas"]["Study"]["properties"]["hyperparameters"]
    by_title = {s["title"]: s for s in hp["oneOf"]}
    assert by_title["deepsurv"]["properties"]["hidden"]["items"]["maximum"] == 1024
    assert by_title["savae"]["properties"]["lr"]["exclusiveMinimum"] is True


@pytest.mark.parametrize("params", [{"hidden": [1000000000]}, {"hidden": [-5]}, {"hidden": [0]},
                                    {"dropout": 0.99}, {"lr": -1.0}])
def test_engine_build_model_refuses_what_the_portal_refuses(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        build_model("deepsurv", 4, params)


def test_engine_passes_engine_only_arguments_and_ignores_federation_knobs():
    m = build_model("deepsurv", 4, {"hidden": [3], "seed": 1, "local_epochs": 5})
    assert m.hidden == (3,)
    with pytest.raises(TypeError):
        build_model("deepsurv", 4, {"no_such_argument": 1})
    with pytest.raises(ValueError, match="latent_dim"):
        build_model("savae", 4, {"latent_dim": 10_000})


@pytest.mark.parametrize("kind", sorted(PARAMS_BY_KIND))
def test_spec_defaults_are_the_constructor_defaults(kind):
    from fl_engine.models.cox import CoxPH
    from fl_engine.models.deepsurv import DeepSurv
    from fl_engine.models.savae import SAVAE

    ctor = {"deepsurv": DeepSurv, "savae": SAVAE, "cox": CoxPH}[kind]
    signature = inspect.signature(ctor.__init__).parameters
    spec = PARAMS_BY_KIND[kind]()
    for name, value in spec.model_dump().items():
        if name == "local_epochs":
            continue
        default = signature[name].default
        assert (list(default) if isinstance(default, tuple) else default) == value, name


def test_no_hyperparameter_bound_is_written_in_the_portal():
    """The spec is the one place: the portal's study modules name no pydantic Field of their own
    for model parameters."""
    from pathlib import Path

    import portal.studies.config as config

    text = Path(config.__file__).read_text()
    assert "class DeepSurvParams" not in text and "class SAVAEParams" not in text
    assert config.DeepSurvParams is PARAMS_BY_KIND["deepsurv"]


@pytest.mark.django_db
@pytest.mark.parametrize("over,field", [
    ({"datasets": list(range(1, 100_001))}, "datasets"),
    ({"feature_groups": ["clinical"] * 6}, "feature_groups"),
    ({"description": "d" * 10_001}, "description"),
    ({"rounds": 501}, "rounds"), ({"rounds": 0}, "rounds"), ({"min_nodes": 10**9}, "min_nodes"),
    ({"fraction_nodes": 1.5}, "fraction_nodes"),
    ({"privacy": {"min_patients_per_node": 10**12}}, "privacy"),
])
def test_api_refuses_other_oversized_study_inputs(api, personas, mds_dataset, over, field):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, **over), format="json")
    assert r.status_code == 400 and field in r.json()["errors"], r.json()
    assert len(queries) < 50  # refused before looking up 100,000 mds_dataset ids one by one
