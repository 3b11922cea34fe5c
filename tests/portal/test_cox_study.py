"""A study may choose the penalised Cox model: stored with its own parameters (no learning rate),
refused with differential privacy (DP-FedAvg has no model update to clip), and its run contract
names the model the engine trains by exact Newton steps."""
import pytest

from fl_engine.federation.config import parse_contract
from portal.studies.config import validate_hyperparameters

pytestmark = pytest.mark.django_db


def _study(mds_dataset, **over):
    return {"title": "Cox", "use_case": "MDS", "endpoint": "os", "features": ["age", "hb"],
            "model_kind": "cox", "datasets": [mds_dataset.pk], "rounds": 6, "min_nodes": 1, **over}


def test_a_cox_study_is_created_and_its_run_trains_the_cox_model(api, personas, mds_dataset):
    from portal.studies import services
    from portal.studies.models import Study

    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, hyperparameters={"penalizer": 0.05}),
                                          format="json")
    assert r.status_code == 201, r.json()
    study = Study.objects.get(pk=r.json()["id"])
    assert study.model_kind == "cox"
    assert study.hyperparameters == validate_hyperparameters("cox", {"penalizer": 0.05})
    assert study.hyperparameters["time_step_months"] == 1.0 and study.hyperparameters["stratified"] is False
    services.decide_approval(personas["node_operator"], study, mds_dataset, "approved")
    run = services.start_run(personas["coordinator"], study, rounds=6)
    cfg = parse_contract(services.flower_run_config(run))
    assert cfg.model == "cox" and cfg.model_params["penalizer"] == 0.05 and cfg.num_rounds == 6


@pytest.mark.parametrize("params,field", [({"lr": 0.01}, "lr"), ({"penalizer": -1}, "penalizer"),
                                          ({"time_step_months": 0}, "time_step_months")])
def test_cox_parameters_are_checked_naming_the_field(api, personas, mds_dataset, params, field):
    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, hyperparameters=params), format="json")
    assert r.status_code == 400 and field in str(r.json()), r.json()


def test_cox_with_differential_privacy_is_refused_at_the_api_and_the_model(api, personas, mds_dataset):
    from django.core.exceptions import ValidationError

    from portal.studies.models import Study

    r = api(personas["coordinator"]).post("/api/studies/", _study(mds_dataset, privacy={"dp_enabled": True}),
                                          format="json")
    assert r.status_code == 400 and "exact Cox model sends sums" in str(r.json()), r.json()
    s = Study(title="x", use_case="MDS", owner=personas["coordinator"], model_kind="cox",
              privacy={"dp_enabled": True})
    with pytest.raises(ValidationError, match="exact Cox model"):
        s.full_clean()
