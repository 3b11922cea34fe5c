"""Page actions that are also API calls (issue #7 point 7): model download, study clone, one's
own time zone. Same services, same audit events, same refusals as the pages."""
import io
import zipfile

import pytest

from tests.portal.pages_world import build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(personas, p384_public_key, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return build_world(personas["administrator"], personas["coordinator"], personas["node_operator"],
                       p384_public_key)


def _store_model_files(run):
    from portal.studies.services import run_dir

    d = run_dir(run) / "model"
    d.mkdir(parents=True, exist_ok=True)
    from portal.core.at_rest import write_file  # encrypted at rest, as the conclusion writes them

    write_file(d / "model.json", b'{"model": "deepsurv"}')
    write_file(d / "model.npz", b"weights")


def test_model_download_through_the_api_is_audited_like_the_page(world, personas, api, client):
    from portal.audit.models import AuditEvent

    mv = world["model"]
    url = f"/api/models/{mv.pk}/download/"
    assert api(personas["data_manager"]).get(url).status_code == 404  # files not stored on this portal
    _store_model_files(mv.run)
    r = api(personas["data_manager"]).get(url)
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    assert 'filename="fedhaem-mds-os-v1.zip"' in r["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["model.json", "model.npz"]
        assert zf.read("model.json") == b'{"model": "deepsurv"}'
    def downloaders():
        return list(AuditEvent.objects.filter(action="model.download", object_id=str(mv.pk))
                    .order_by("id").values_list("actor_name", flat=True))

    assert downloaders() == ["data_manager"]
    # the page gives the same file through the same service
    client.force_login(personas["clinician"])
    page = client.get(f"/models/{mv.pk}/download/")
    assert page.status_code == 200 and page.content == r.content
    assert downloaders() == ["data_manager", "clinician"]
    # roles without access to the model registry are refused, and nothing is recorded
    for persona in ("node_operator", "outsider", "norole"):
        assert api(personas[persona]).get(url).status_code == 403, persona
    assert api().get(url).status_code == 401
    assert downloaders() == ["data_manager", "clinician"]
    listing = api(personas["clinician"]).get("/api/models/").json()
    assert [m["id"] for m in listing["results"]] == [mv.pk] and listing["results"][0]["study"] == world["study"].pk


def test_clone_through_the_api_makes_a_draft_copy(world, personas, api):
    from portal.audit.models import AuditEvent
    from portal.studies import services
    from portal.studies.models import Study

    source = world["study"]
    services.update_study(personas["coordinator"], source, {
        "status": "ready", "privacy": {"min_patients_per_node": 40, "min_cell_count": 12, "dp_enabled": True,
                                       "dp_clip_norm": 0.7, "dp_noise_multiplier": 1.1}})
    r = api(personas["coordinator"]).post(f"/api/studies/{source.pk}/clone/", format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    copy = Study.objects.get(pk=body["id"])
    assert copy.pk != source.pk and copy.title == f"Copy of {source.title}" and copy.status == "draft"
    for field in ("use_case", "endpoint", "feature_groups", "model_kind", "hyperparameters", "rounds",
                  "min_nodes", "privacy"):
        assert getattr(copy, field) == getattr(source, field), field
    assert list(copy.datasets.all()) == list(source.datasets.all())
    assert body["privacy"]["dp_clip_norm"] == 0.7
    event = AuditEvent.objects.get(action="study.clone", object_id=str(copy.pk))
    assert event.detail == {"from": source.pk} and event.actor_name == "coordinator"
    assert api(personas["clinician"]).post(f"/api/studies/{source.pk}/clone/").status_code == 403
    assert api(personas["coordinator"]).post("/api/studies/999999/clone/").status_code == 404


def test_own_time_zone_through_the_api(personas, api):
    from portal.audit.models import AuditEvent

    user = personas["clinician"]
    c = api(user)
    r = c.patch("/api/me/", {"timezone": "Europe/Madrid"}, format="json")
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Madrid"
    user.refresh_from_db()
    assert user.timezone == "Europe/Madrid"
    assert AuditEvent.objects.filter(action="user.preferences", actor=user).exists()
    for bad in ("Mars/Olympus_Mons", "", "europe/madrid", None):
        r = c.patch("/api/me/", {"timezone": bad}, format="json")
        assert r.status_code == 400, bad
        assert "timezone" in r.json()["errors"] and "timezone" in r.json()["detail"]
    assert c.patch("/api/me/", {}, format="json").status_code == 400
    user.refresh_from_db()
    assert user.timezone == "Europe/Madrid"
    assert c.get("/api/me/").json()["timezone"] == "Europe/Madrid"
