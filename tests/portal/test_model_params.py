"""The hyper-parameters a study stores are exactly what the models accept."""
import pytest

from fl_engine.models import build_model
from portal.studies.config import PARAMS_BY_KIND, validate_hyperparameters


@pytest.mark.parametrize("kind", sorted(PARAMS_BY_KIND))
def test_defaults_build_the_model(kind):
    params = validate_hyperparameters(kind, {})
    params.pop("local_epochs")
    model = build_model(kind, 7, params)
    assert len(model.get_weights()) > 0
