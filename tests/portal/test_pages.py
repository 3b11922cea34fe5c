"""Server-rendered pages per role: what each sees, the study form (errors next to fields, draft,
edit, clone), actions through the same services as the API, cohort downloads, audit filters."""
import pytest

from tests.portal.pages_world import build_world, mds_columns

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(personas, p384_public_key, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return build_world(personas["administrator"], personas["coordinator"], personas["node_operator"],
                       p384_public_key, with_curves=True)


@pytest.fixture
def browse(client):
    def as_user(user):
        client.force_login(user)
        return client
    return as_user


PAGES = ["/", "/studies/", "/runs/", "/models/", "/nodes/", "/datasets/", "/cohorts/", "/audit/"]
ALLOWED = {
    "clinician": {"/", "/studies/", "/runs/", "/models/", "/nodes/", "/datasets/", "/cohorts/"},
    "coordinator": {"/", "/studies/", "/runs/", "/models/", "/nodes/", "/datasets/", "/cohorts/"},
    "data_manager": {"/", "/studies/", "/runs/", "/models/", "/nodes/", "/datasets/", "/cohorts/"},
    "node_operator": {"/", "/studies/", "/runs/", "/nodes/", "/datasets/"},
    "administrator": set(PAGES),
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_each_role_reaches_its_pages_and_only_those(world, personas, browse, role):
    c = browse(personas[role])
    for page in PAGES:
        status = c.get(page).status_code
        assert (status == 200) == (page in ALLOWED[role]), (role, page, status)


def test_detail_pages_render_without_raw_json(world, personas, browse):
    c = browse(personas["administrator"])
    w = world
    for url in [f"/studies/{w['study'].pk}/", f"/runs/{w['run'].pk}/", f"/studies/{w['study'].pk}/compare/",
                f"/studies/{w['study'].pk}/report/", f"/models/{w['model'].pk}/",
                f"/datasets/{w['dataset'].pk}/", f"/cohorts/{w['released'].pk}/"]:
        r = c.get(url)
        assert r.status_code == 200, url
        html = r.content.decode()
        assert "{&#x27;" not in html and "{'" not in html, f"raw dict shown on {url}"
    report = c.get(f"/studies/{w['study'].pk}/report/?download=1")
    assert "attachment" in report["Content-Disposition"]
    body = report.content.decode()
    assert w["dataset"].fingerprint in body and "0.690" in body and "0.710" in body  # fingerprint, federated, centralised
    assert "/static/" not in body and "Plotly" in body  # stands alone: CSS and plotly.js inlined


def test_comparison_sets_each_hospital_beside_its_own_model_and_the_score(world, personas, browse):
    html = browse(personas["clinician"]).get(f"/studies/{world['study'].pk}/compare/").content.decode()
    row = html[html.index(f'<th scope="row">{world["node"].name}</th>'):]
    row = row[:row.index("</tr>")]
    # federated 0.680 at the hospital, isolated 0.640, gain +0.040, IPSS-M 0.670 on 62 patients
    for cell in ("62", "0.680", "0.640", "+0.040", "0.670 <small>on 62 of 62</small>"):
        assert f"<td>{cell}</td>" in row, (cell, row)
    assert "IPSS-M" in html and "0.710" in html  # conventional score named; imported centralised reference
    # Kaplan-Meier panels from the run's curves: the model's groups and the score's categories
    assert 'id="curves-data"' in html and "predicted 2-year survival" in html and "Very Low" in html
    assert 'id="km-1"' in html and 'id="km-2"' in html


def test_home_shows_what_needs_attention(world, personas, browse):
    from portal.datasets.models import Dataset
    from portal.studies import services

    ds2 = Dataset.objects.create(node=world["node"], name="mds", version=2, use_case="MDS", cdm_version="1.0",
                                 patient_count=320, feature_schema=mds_columns(), fingerprint="ef" * 32)
    services.update_study(personas["coordinator"], world["study"], {"datasets": [world["dataset"], ds2]})
    op = browse(personas["node_operator"]).get("/").content.decode()
    assert "Studies awaiting your approval" in op and "mds v2" in op
    coord = browse(personas["coordinator"]).get("/").content.decode()
    assert "waiting for hospitals" in coord and "New study" in coord
    admin = browse(personas["administrator"]).get("/").content.decode()
    assert "1</strong> awaiting approval" in admin


def _form(ds, **over):
    data = {"title": "AML EFS", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
            "datasets": [ds.pk], "model_kind": "deepsurv", "hp_hidden_layers": "32, 16", "hp_dropout": "0.1",
            "hp_lr": "0.001", "hp_weight_decay": "0.0001", "hp_batch_size": "64", "hp_local_epochs": "2",
            "rounds": "4", "fraction_nodes": "1.0", "min_nodes": "1", "strategy": "fedavg", "intent": "draft"}
    data.update(over)
    return data


def test_study_form_errors_next_to_fields_and_nothing_saved(world, personas, browse):
    from portal.studies.models import Study

    c = browse(personas["coordinator"])
    before = Study.objects.count()
    r = c.post("/studies/new/", _form(world["dataset"], endpoint="pfs", hp_dropout="1.5", fraction_nodes="0"))
    assert r.status_code == 200 and Study.objects.count() == before
    form = r.context["form"]
    assert "endpoint" in form.errors and "hp_dropout" in form.errors and "fraction_nodes" in form.errors
    html = r.content.decode()
    assert 'id="id_hp_dropout_error"' in html and 'id="id_endpoint_error"' in html
    # a dataset lacking the genomic group is refused next to the datasets field
    r = c.post("/studies/new/", _form(world["dataset"], feature_groups=["genomic"]))
    assert "has no genomic columns" in " ".join(r.context["form"].errors["datasets"])
    # a pending node's dataset is not even offered
    r = c.post("/studies/new/", _form(world["dataset"], datasets=[world["pending_node"].datasets.get().pk]))
    assert "datasets" in r.context["form"].errors


def test_study_draft_edit_clone(world, personas, browse):
    from portal.audit.models import AuditEvent
    from portal.studies.models import Study

    c = browse(personas["coordinator"])
    r = c.post("/studies/new/", _form(world["dataset"]))
    study = Study.objects.get(title="AML EFS")
    assert r.status_code == 302 and r["Location"] == f"/studies/{study.pk}/"
    assert study.status == "draft" and study.hyperparameters["hidden"] == [32, 16]
    assert AuditEvent.objects.filter(action="study.create", object_id=str(study.pk)).exists()
    edit = c.get(f"/studies/{study.pk}/edit/")
    assert edit.context["form"].initial["hp_hidden_layers"] == "32, 16"
    c.post(f"/studies/{study.pk}/edit/", _form(world["dataset"], title="MDS OS v2", intent="ready", rounds="7"))
    study.refresh_from_db()
    assert (study.title, study.status, study.rounds) == ("MDS OS v2", "ready", 7)
    clone = c.get(f"/studies/{study.pk}/clone/")
    assert clone.context["form"].initial["title"] == "Copy of MDS OS v2"
    c.post(f"/studies/{study.pk}/clone/", _form(world["dataset"], title="Copy of MDS OS v2", rounds="7"))
    copy = Study.objects.get(title="Copy of MDS OS v2")
    assert copy.pk != study.pk and copy.rounds == 7 and list(copy.datasets.all()) == [world["dataset"]]
    assert browse(personas["clinician"]).get("/studies/new/").status_code == 403


def test_approve_and_start_run_from_the_pages(world, personas, browse, django_capture_on_commit_callbacks):
    from portal.studies import services
    from portal.studies.models import Run

    study = services.create_study(personas["coordinator"], {
        "title": "Awaiting approval", "use_case": "MDS", "endpoint": "os", "feature_groups": ["clinical"],
        "datasets": [world["dataset"]], "min_nodes": 1})
    c = browse(personas["coordinator"])
    r = c.post(f"/studies/{study.pk}/start/", {"rounds": 2}, follow=True)
    assert "awaiting the node operators" in r.content.decode()
    assert not Run.objects.filter(study=study).exists()
    op = browse(personas["node_operator"])
    assert "Approve" in op.get(f"/studies/{study.pk}/").content.decode()
    op.post(f"/studies/{study.pk}/decide/", {"dataset": world["dataset"].pk, "decision": "approved"})
    assert study.approvals.get().decision == "approved"
    c = browse(personas["coordinator"])
    with django_capture_on_commit_callbacks(execute=False):
        r = c.post(f"/studies/{study.pk}/start/", {"rounds": 2})
    run = Run.objects.get(study=study)
    assert r["Location"] == f"/runs/{run.pk}/" and run.rounds == 2 and run.status == "queued"
    assert browse(personas["clinician"]).post(f"/studies/{study.pk}/start/", {"rounds": 2}).status_code == 403


def test_admin_approves_and_revokes_nodes(world, personas, browse):
    node = world["pending_node"]
    c = browse(personas["administrator"])
    r = c.post(f"/nodes/{node.pk}/approve/", follow=True)
    node.refresh_from_db()
    assert node.status == "approved"
    assert 'id="node-token"' in r.content.decode()  # shown once
    assert 'id="node-token"' not in c.get("/nodes/").content.decode()
    c.post(f"/nodes/{node.pk}/revoke/", {"reason": "decommissioned"})
    node.refresh_from_db()
    assert node.status == "revoked"
    assert browse(personas["node_operator"]).post(f"/nodes/{node.pk}/approve/").status_code == 403


def test_node_operator_sees_own_hospital_only(world, personas, browse):
    html = browse(personas["node_operator"]).get("/nodes/").content.decode()
    assert "hosp-a-node" in html and "hosp-z-node" not in html
    # its hospital's announcement waits for registration: listed for registration, not yet in the catalogue
    html = browse(personas["node_operator"]).get("/datasets/register/").content.decode()
    assert "312 patients" in html and "95 patients" not in html
    html = browse(personas["node_operator"]).get("/datasets/").content.decode()
    assert "312 patients" not in html and 'id="waiting"' in html
    out = browse(personas["outsider"]).get("/nodes/").content.decode()
    assert "hosp-a-node" not in out


def test_cohort_download_released_only_and_audited(world, personas, browse):
    from portal.audit.models import AuditEvent

    dm = browse(personas["data_manager"])
    ok = dm.get(f"/cohorts/{world['released'].pk}/download/")
    assert ok.status_code == 200 and b"os_months" in b"".join(ok.streaming_content)
    refused = dm.get(f"/cohorts/{world['unreleased'].pk}/download/")
    assert refused.status_code == 403 and "not been released" in refused.content.decode()
    assert browse(personas["clinician"]).get(f"/cohorts/{world['released'].pk}/download/").status_code == 403
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"cohort.download", "cohort.download_refused"} <= actions


def test_audit_page_filters_and_links_the_csv_export(world, personas, browse):
    c = browse(personas["administrator"])
    r = c.get("/audit/", {"action": "node."})
    events = list(r.context["page"])
    assert events and all(e.action.startswith("node.") for e in events)
    assert "/api/audit/export/?action=node." in r.content.decode()
    csv = c.get("/api/audit/export/?action=node.")
    assert csv.status_code == 200 and "node.register" in csv.content.decode()


def test_times_in_the_users_time_zone(world, personas, browse):
    user = personas["administrator"]
    user.timezone = "Asia/Tokyo"
    user.save()
    html = browse(user).get(f"/runs/{world['run'].pk}/").content.decode()
    assert "JST" in html or "+09" in html or "Asia/Tokyo" in html


def test_cohort_api_matches_the_pages(world, personas, api):
    """The cohorts API (portal.synthesis.api) applies the same rules as the pages."""
    from rest_framework.test import APIRequestFactory, force_authenticate

    from portal.synthesis.api import SyntheticCohortViewSet

    factory = APIRequestFactory()

    def call(user, action, pk, method="get"):
        view = SyntheticCohortViewSet.as_view({method: action})
        request = getattr(factory, method)(f"/api/cohorts/{pk}/{action}/")
        force_authenticate(request, user=user)
        return view(request, pk=pk)

    ok = call(personas["data_manager"], "download", world["released"].pk)
    assert ok.status_code == 200 and b"os_months" in b"".join(ok.streaming_content)
    assert call(personas["data_manager"], "download", world["unreleased"].pk).status_code == 403
    assert call(personas["clinician"], "download", world["released"].pk).status_code == 403
    refused = call(personas["coordinator"], "release", world["unreleased"].pk, "post")
    assert refused.status_code == 409 and "privacy gate" in refused.data["detail"]
    listed = SyntheticCohortViewSet.as_view({"get": "list"})
    request = factory.get("/api/cohorts/")
    force_authenticate(request, user=personas["node_operator"])
    assert listed(request).status_code == 403


def test_person_sets_their_time_zone(world, personas, browse):
    c = browse(personas["clinician"])
    assert c.post("/preferences/", {"timezone": "Not/AZone"}).context["form"].errors["timezone"]
    c.post("/preferences/", {"timezone": "America/New_York"})
    personas["clinician"].refresh_from_db()
    assert personas["clinician"].timezone == "America/New_York"
    html = c.get(f"/runs/{world['run'].pk}/").content.decode()
    assert "times shown in America/New_York" in html


def test_cohort_report_in_words(world, personas, browse):
    from portal.synthesis.models import SyntheticCohort

    c = world["released"]
    SyntheticCohort.objects.filter(pk=c.pk).update(validation_report={
        "gate": {"passed": True, "failed": [], "checks": [
            {"name": "dcr_ratio", "measured": 1.04, "threshold": 0.9, "comparison": ">=", "passed": True}]}})
    html = browse(personas["data_manager"]).get(f"/cohorts/{c.pk}/").content.decode()
    assert "gate · checks · dcr ratio" in html and "measured 1.040, threshold 0.900 (&gt;=) — passed" in html
    assert "{&#x27;" not in html
