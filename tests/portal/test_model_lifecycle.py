"""Model lifecycle: aliases and tags set by coordinators with a reason, audited, mirrored in a real
MLflow registry (a SQLite store per test); viewers see them and cannot set them; bad input is a
400 naming the field; downloads name the alias."""
from __future__ import annotations

import io
import zipfile

import pytest
from mlflow import MlflowClient

from portal.audit.models import AuditEvent
from portal.core.at_rest import write_file
from portal.studies.models import ModelAlias, ModelVersion, Run, Study
from portal.studies.services import run_dir

pytestmark = pytest.mark.django_db

NAME = "fedhaem-mds-os-lifecycle"


@pytest.fixture
def mlflow_client(settings, tmp_path):
    import mlflow

    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    settings.MLFLOW_ARTIFACT_ROOT = str(tmp_path / "mlflow" / "artifacts")
    (tmp_path / "mlflow").mkdir()
    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    return MlflowClient()


@pytest.fixture
def versions(personas, mds_dataset, mlflow_client, tmp_path):
    """Two finished runs of one study, each registered as a version of NAME in MLflow's registry
    (real store), with the model files of version 1 on the portal."""
    study = Study.objects.create(title="Lifecycle models", use_case="MDS", owner=personas["coordinator"],
                                 features=["age", "hb"], min_nodes=1, rounds=2)
    study.datasets.add(mds_dataset)
    mlflow_client.create_registered_model(NAME)
    source = tmp_path / "model-src"
    source.mkdir()
    out = []
    for i in (1, 2):
        run = Run.objects.create(study=study, rounds=2, created_by=personas["coordinator"], status="finished",
                                 config={"datasets": [{"node": "hosp-a-node", "name": "mds", "version": 1,
                                                       "fingerprint": "f" * 64, "patients": 300}]})
        v = mlflow_client.create_model_version(NAME, str(source))
        out.append(ModelVersion.objects.create(run=run, mlflow_run_id=f"{i}" * 32, registered_model_name=NAME,
                                               version=str(v.version)))
    (run_dir(out[0].run) / "model").mkdir(parents=True, exist_ok=True)
    write_file(run_dir(out[0].run) / "model" / "model.json", b'{"kind": "deepsurv"}')
    return out


def _alias(api, user, mv, **body):
    return api(user).post(f"/api/models/{mv.pk}/alias/", body, format="json")


def test_moving_an_alias_keeps_one_holder_mirrors_mlflow_and_is_audited(versions, personas, api, mlflow_client):
    v1, v2 = versions
    coordinator = personas["coordinator"]
    r = _alias(api, coordinator, v1, alias="champion", reason="best C-index on the held-out patients")
    assert r.status_code == 200, r.content
    assert r.json()["aliases"] == ["champion"]
    assert str(mlflow_client.get_model_version_by_alias(NAME, "champion").version) == v1.version

    r = _alias(api, coordinator, v2, alias="champion", reason="recalibrated on the 2026 cohort")
    assert r.status_code == 200, r.content
    assert ModelAlias.objects.filter(registered_model_name=NAME, alias="champion").count() == 1
    assert api(coordinator).get(f"/api/models/{v1.pk}/").json()["aliases"] == []
    assert api(coordinator).get(f"/api/models/{v2.pk}/").json()["aliases"] == ["champion"]
    assert str(mlflow_client.get_model_version_by_alias(NAME, "champion").version) == v2.version

    moves = list(AuditEvent.objects.filter(action="model.alias").order_by("id"))
    assert [(e.detail["from_version"], e.detail["to_version"]) for e in moves] == [(None, "1"), ("1", "2")]
    last = moves[-1]
    assert last.actor == coordinator and last.object_id == str(v2.pk)
    assert last.detail["reason"] == "recalibrated on the 2026 cohort" and last.detail["alias"] == "champion"

    # the same alias on the version that holds it: nothing moves, nothing is audited
    assert _alias(api, coordinator, v2, alias="champion", reason="again").status_code == 200
    assert AuditEvent.objects.filter(action="model.alias").count() == 2

    # removal: audited, gone from MLflow too
    r = _alias(api, coordinator, v2, alias="champion", reason="withdrawn after the safety review", remove=True)
    assert r.status_code == 200 and r.json()["aliases"] == []
    removed = AuditEvent.objects.get(action="model.alias_removed")
    assert removed.detail["from_version"] == "2" and removed.detail["reason"] == "withdrawn after the safety review"
    with pytest.raises(Exception, match="champion"):
        mlflow_client.get_model_version_by_alias(NAME, "champion")
    # removing an alias the version does not hold names the field
    r = _alias(api, coordinator, v2, alias="champion", reason="twice", remove=True)
    assert r.status_code == 400 and "alias" in r.json()["errors"]


@pytest.mark.parametrize("who", ["clinician", "data_manager", "administrator", "node_operator", "outsider", "norole"])
def test_viewers_see_aliases_but_cannot_set_them(versions, personas, api, who):
    v1, _ = versions
    _alias(api, personas["coordinator"], v1, alias="candidate", reason="first federated model")
    before = AuditEvent.objects.count()
    r = _alias(api, personas[who], v1, alias="champion", reason="I would like to")
    assert r.status_code == 403, (who, r.content)
    r = api(personas[who]).post(f"/api/models/{v1.pk}/tags/", {"key": "k", "value": "v", "reason": "r"},
                                format="json")
    assert r.status_code == 403
    assert AuditEvent.objects.count() == before
    assert list(ModelAlias.objects.values_list("alias", flat=True)) == ["candidate"]
    if personas[who].has_perm("studies.view_modelversion"):
        assert api(personas[who]).get(f"/api/models/{v1.pk}/").json()["aliases"] == ["candidate"]


def test_anonymous_cannot_set_an_alias(versions, api):
    assert _alias(api, None, versions[0], alias="champion", reason="x").status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"alias": "champion"}, "reason"),
    ({"alias": "champion", "reason": "   "}, "reason"),
    ({"reason": "why"}, "alias"),
    ({"alias": "Champion!", "reason": "why"}, "alias"),
    ({"alias": "latest", "reason": "why"}, "alias"),
    ({"alias": "v3", "reason": "why"}, "alias"),
    ({"alias": "x" * 41, "reason": "why"}, "alias"),
    ({"alias": "champion", "reason": "r" * 501}, "reason"),
    ({"alias": "champion", "reason": "why", "remove": "perhaps"}, "remove"),
])
def test_a_bad_alias_request_is_a_400_naming_the_field(versions, personas, api, body, field):
    r = _alias(api, personas["coordinator"], versions[0], **body)
    assert r.status_code == 400 and field in r.json()["errors"], r.content
    assert not ModelAlias.objects.exists() and not AuditEvent.objects.filter(action__startswith="model.").exists()


@pytest.mark.parametrize("body, field", [
    ({"key": "fedhaem.source_sha256", "value": "x", "reason": "why"}, "key"),
    ({"key": "9lives", "value": "x", "reason": "why"}, "key"),
    ({"key": "validation", "value": "x"}, "reason"),
    ({"key": "validation", "value": "x" * 501, "reason": "why"}, "value"),
    ({"key": "never-set", "value": "", "reason": "why"}, "key"),
])
def test_a_bad_tag_request_is_a_400_naming_the_field(versions, personas, api, body, field):
    r = api(personas["coordinator"]).post(f"/api/models/{versions[0].pk}/tags/", body, format="json")
    assert r.status_code == 400 and field in r.json()["errors"], r.content
    versions[0].refresh_from_db()
    assert versions[0].tags == {}


def test_tags_are_audited_with_old_and_new_value_and_mirrored(versions, personas, api, mlflow_client):
    v1, _ = versions
    url = f"/api/models/{v1.pk}/tags/"
    client = api(personas["coordinator"])
    r = client.post(url, {"key": "validation", "value": "external-2026", "reason": "validated at hospital C"},
                    format="json")
    assert r.status_code == 200 and r.json()["tags"] == {"validation": "external-2026"}
    assert mlflow_client.get_model_version(NAME, v1.version).tags["validation"] == "external-2026"
    assert client.post(url, {"key": "validation", "value": "", "reason": "validation withdrawn"},
                       format="json").json()["tags"] == {}
    assert "validation" not in mlflow_client.get_model_version(NAME, v1.version).tags
    changes = [(e.detail["from"], e.detail["to"], e.detail["reason"])
               for e in AuditEvent.objects.filter(action="model.tag").order_by("id")]
    assert changes == [(None, "external-2026", "validated at hospital C"),
                       ("external-2026", None, "validation withdrawn")]


def test_a_version_mlflow_does_not_hold_is_refused_and_nothing_is_stored(versions, personas, api, mlflow_client):
    v1, _ = versions
    ghost = ModelVersion.objects.create(run=Run.objects.create(study=v1.run.study, rounds=2, status="finished",
                                                               created_by=personas["coordinator"]),
                                        mlflow_run_id="9" * 32, registered_model_name="fedhaem-not-in-mlflow",
                                        version="1")
    r = _alias(api, personas["coordinator"], ghost, alias="champion", reason="should not stick")
    assert r.status_code == 409 and "MLflow" in r.json()["detail"]
    assert not ModelAlias.objects.exists() and not AuditEvent.objects.filter(action="model.alias").exists()


def test_downloads_name_the_alias(versions, personas, api, client):
    v1, _ = versions
    r = api(personas["clinician"]).get(f"/api/models/{v1.pk}/download/")
    assert r.status_code == 200 and f'filename="{NAME}-v1.zip"' in r["Content-Disposition"]
    _alias(api, personas["coordinator"], v1, alias="champion", reason="chosen")
    _alias(api, personas["coordinator"], v1, alias="candidate", reason="also")
    r = api(personas["clinician"]).get(f"/api/models/{v1.pk}/download/")
    assert r.status_code == 200 and f'filename="{NAME}-v1-candidate-champion.zip"' in r["Content-Disposition"]
    assert zipfile.ZipFile(io.BytesIO(r.content)).read("model.json") == b'{"kind": "deepsurv"}'
    client.force_login(personas["clinician"])
    page = client.get(f"/models/{v1.pk}/download/")
    assert page.status_code == 200 and f"{NAME}-v1-candidate-champion.zip" in page["Content-Disposition"]
    # the audit says which version was taken under which aliases at that moment
    downloads = [e.detail for e in AuditEvent.objects.filter(action="model.download").order_by("pk")]
    assert [d["aliases"] for d in downloads] == [[], ["candidate", "champion"], ["candidate", "champion"]]
    assert {d["version"] for d in downloads} == {"1"}


def test_model_page_shows_aliases_lineage_and_forms_only_to_coordinators(versions, personas, client, api):
    v1, v2 = versions
    _alias(api, personas["coordinator"], v2, alias="champion", reason="chosen by the board")
    client.force_login(personas["clinician"])
    page = client.get(f"/models/{v1.pk}/").content.decode()
    assert "@champion" in page and "version 2" in page and "chosen by the board" in page
    assert "f" * 16 in page  # the dataset fingerprint in the lineage
    assert 'name="reason"' not in page  # a viewer gets no form
    assert client.post(f"/models/{v1.pk}/alias/", {"alias": "champion", "reason": "x"}).status_code == 403
    assert ModelAlias.objects.get(alias="champion").model_version == v2

    client.force_login(personas["coordinator"])
    assert 'name="reason"' in client.get(f"/models/{v1.pk}/").content.decode()
    r = client.post(f"/models/{v1.pk}/alias/", {"alias": "champion", "reason": "back to the first"}, follow=True)
    assert "now points to version 1" in r.content.decode()
    assert ModelAlias.objects.get(alias="champion").model_version == v1
    r = client.post(f"/models/{v1.pk}/alias/", {"alias": "champion", "reason": ""}, follow=True)
    assert "reason: a reason is required" in r.content.decode()
    r = client.post(f"/models/{v1.pk}/tag/", {"key": "validation", "value": "internal", "reason": "checked"},
                    follow=True)
    assert "Tag validation set" in r.content.decode() and "internal" in r.content.decode()
    listing = client.get("/models/").content.decode()
    assert "@champion" in listing


def test_a_run_without_result_has_no_capsule(versions, personas, api):
    r = api(personas["clinician"]).get(f"/api/models/{versions[0].pk}/capsule/")
    assert r.status_code == 409 and "c_index" in r.json()["detail"]

