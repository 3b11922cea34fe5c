"""The study form shows the privacy cost a run would charge to each hospital's ledger, computed by
the nodes' own accountant (fl_engine.federation.privacy.dp_fedavg_epsilon)."""
import pytest

from fl_engine.federation.privacy import dp_fedavg_epsilon
from tests.portal.pages_world import build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(personas, p384_public_key, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return build_world(personas["administrator"], personas["coordinator"], personas["node_operator"],
                       p384_public_key)


def _form(ds, **over):
    data = {"title": "MDS OS private", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
            "datasets": [ds.pk], "model_kind": "deepsurv", "hp_hidden_layers": "32, 16", "rounds": "4",
            "fraction_nodes": "1.0", "min_nodes": "1", "strategy": "fedavg", "intent": "draft"}
    data.update(over)
    return data


def test_the_form_shows_the_expected_epsilon_of_its_dp_settings(world, client, personas):
    client.force_login(personas["coordinator"])
    html = client.get("/studies/new/").content.decode()
    assert "no DP guarantee" in html
    # A submission with an error is shown again, with the cost of what was entered.
    r = client.post("/studies/new/", _form(world["dataset"], priv_dp_enabled="on", priv_dp_noise="1.2",
                                           priv_dp_clip_norm="1.0", priv_min_cell="0", title=""))
    assert r.status_code == 200
    html = r.content.decode()
    assert f"epsilon {dp_fedavg_epsilon(1.2, 4, 1e-6):.2f} at delta 1e-06" in html
    assert "(4 rounds, noise multiplier 1.2" in html
    r = client.post("/studies/new/", _form(world["dataset"], priv_dp_enabled="on", priv_dp_noise="0", title=""))
    assert "unbounded (noise multiplier 0)" in r.content.decode()


def test_the_run_page_shows_the_epsilon_the_run_spent(world, client, personas):
    run = world["run"]
    client.force_login(personas["coordinator"])
    run.config = {**(run.config or {}), "privacy": {"dp_enabled": False, "dp_noise_multiplier": 1.0}}
    run.save(update_fields=["config"])
    assert 'id="run-spent-epsilon"' not in client.get(f"/runs/{run.pk}/").content.decode()
    run.config = {**run.config, "privacy": {"min_cell_count": 10, "dp_enabled": True, "dp_clip_norm": 1.0,
                                            "dp_noise_multiplier": 2.0}}
    run.save(update_fields=["config"])
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert f"epsilon {dp_fedavg_epsilon(2.0, run.rounds, 1e-6):.2f} at delta 1e-06 ({run.rounds} rounds" in html, html
