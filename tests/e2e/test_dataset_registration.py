"""Registering a dataset in a real browser after a real OIDC login: a clinician of hospital A opens
"Register a dataset", picks the announcement of A's node, fills the guided form with a policy and
sees the node's own limits; a clinician of hospital B cannot see the announcement until it is
registered, then reads it in the catalogue but cannot change it."""
from __future__ import annotations

import pytest
from django.utils import timezone

from tests.e2e.conftest import shot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def announced(people):
    """An approved node of hospital A with local limits, and the dataset version it announced."""
    from portal.datasets.services import announce
    from portal.nodes.models import WorkerNode
    from tests.conftest import fresh_p384_key

    org_a = people["clinician"].organisation
    node = WorkerNode.objects.create(organisation=org_a, name="hosp-a-node", public_key=fresh_p384_key(),
                                     status=WorkerNode.Status.APPROVED, approved_at=timezone.now(),
                                     approved_by=people["admin"], flower_node_id="9000000000000000011",
                                     policy_limits={"*": {"min_cell_count": 5}, "mds-registry": {"require_dp": True}})
    ds, _ = announce(node, None, {"name": "mds-registry", "version": 1, "use_case": "MDS", "schema_version": "1.0",
                                  "patient_count": 412, "fingerprint": "9c" * 32,
                                  "feature_schema": ["age", "hb", "os_months", "os_event"]})
    return ds


def _switch(page, login, username):
    page.context.clear_cookies()
    return login(username)


def test_a_clinician_registers_an_announced_dataset_and_another_hospital_sees_it_only_then(announced, people,
                                                                                            login):
    from portal.audit.models import AuditEvent
    from portal.datasets.models import Dataset

    ds = announced
    # hospital B's clinician: neither in the catalogue, nor among announcements, nor by its address
    page = login("clinicianb")
    page.goto(f"{login.url}/datasets/")
    assert page.get_by_text("mds-registry").count() == 0
    page.goto(f"{login.url}/datasets/register/")
    assert page.get_by_text("mds-registry").count() == 0
    response = page.goto(f"{login.url}/datasets/{ds.pk}/")
    assert response.status == 404

    # hospital A's clinician registers it through the guided form
    page = _switch(page, login, "clinician")
    page.goto(f"{login.url}/datasets/")
    page.locator("#waiting").get_by_role("link", name="Register a dataset").click()
    page.get_by_role("link", name="Register mds-registry v1").click()
    limits = page.locator("#node-limits")
    assert "Minimum small-cell threshold" in limits.inner_text() and "5" in limits.inner_text()
    assert "Differential privacy required" in limits.inner_text()
    page.get_by_label("Title").fill("MDS registry of Hospital A, 2015-2024")
    page.get_by_label("Clinical description").fill("Adults with MDS at diagnosis, WHO 2016, followed to death or 2024.")
    page.get_by_label("Inclusion start").fill("2015-01-01")
    page.get_by_label("Inclusion end").fill("2014-12-31")  # before the start: refused, named, nothing stored
    page.get_by_label("Contact").fill("Dr Clara Ruiz, haematology@hosp-a.example.org")
    page.get_by_label("Sensitive: training only").check()
    page.get_by_label("Broad: any study of this disease").check()
    page.get_by_label("Synthetic data generation").uncheck()
    page.get_by_label("Minimum small-cell threshold").fill("10")
    page.get_by_label("Policy expires on").fill("2031-06-30")
    page.get_by_role("button", name="Register and add to the catalogue").click()
    assert page.locator("#id_inclusion_end_error").inner_text() == "Before the inclusion start."
    assert Dataset.objects.get(pk=ds.pk).catalogued_at is None
    page.get_by_label("Inclusion end").fill("2024-12-31")
    page.get_by_role("button", name="Register and add to the catalogue").click()
    page.wait_for_url(f"{login.url}/datasets/{ds.pk}/")
    policy = page.locator("#policy").inner_text()
    assert "sensitive" in policy and "broad" in policy and "2031-06-30" in policy
    assert "What the node applies" in policy
    shot(page, "clinician-dataset-registered")
    ds.refresh_from_db()
    assert ds.policy == {"sensitivity": "sensitive", "consent_scope": "broad", "purposes": ["analysis", "training"],
                         "require_dp": False, "min_cell_count": 10, "expires_on": "2031-06-30"}
    assert ds.catalogued_by.username == "clinician" and ds.title == "MDS registry of Hospital A, 2015-2024"
    event = AuditEvent.objects.get(action="dataset.register")
    assert event.actor.username == "clinician" and event.detail["policy"] == ds.policy

    # hospital B's clinician: now in the catalogue, readable, not changeable
    page = _switch(page, login, "clinicianb")
    page.goto(f"{login.url}/datasets/")
    page.get_by_role("link", name="mds-registry v1").click()
    assert "MDS registry of Hospital A, 2015-2024" in page.locator("#registration").inner_text()
    assert page.get_by_role("link", name="Change the registration").count() == 0
    response = page.goto(f"{login.url}/datasets/{ds.pk}/registration/")
    assert response.status == 403
    shot(page, "clinician-b-dataset-readonly")
    assert AuditEvent.objects.filter(action__startswith="dataset.registration").count() == 0
    assert Dataset.objects.get(pk=ds.pk).policy == ds.policy
