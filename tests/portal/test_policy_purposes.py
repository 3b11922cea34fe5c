"""The manager judges a dataset's policy as its node will: broad consent counts for every purpose
the policy allows (training, synthesis, analysis), the node's announced local limits tighten the
registered policy, and a run the node would refuse is refused at start with the remedy."""
from __future__ import annotations

import pytest

from fl_engine.node.policy import validate_policy
from portal.nodes.models import WorkerNode
from portal.nodes.selectors import local_limits_for
from portal.studies import services as study_services
from portal.studies.models import Study


def _study(personas, ds, **kw):
    st = Study.objects.create(title="S", use_case="MDS", endpoint="os", owner=personas["coordinator"],
                              model_kind="deepsurv", features=["age", "hb"], **kw)
    st.datasets.set([ds])
    return st


def _register(ds, **policy):
    ds.policy = validate_policy(policy)
    ds.save(update_fields=["policy"])
    ds.refresh_from_db()
    return ds


def _limits(node, body):
    WorkerNode.objects.filter(pk=node.pk).update(policy_limits=body)
    node.refresh_from_db()


@pytest.mark.django_db
@pytest.mark.parametrize("allowed", [["training"], ["synthesis"], ["analysis"], ["synthesis", "analysis"]])
def test_broad_consent_counts_for_exactly_the_purposes_the_policy_allows(personas, mds_dataset, allowed):
    st = _study(personas, _register(mds_dataset, consent_scope="broad", purposes=allowed))
    for purpose in ("training", "synthesis", "analysis"):
        [row] = study_services.approval_state(st, purpose)
        if purpose in allowed:
            assert row["decision"] == "approved" and row["basis"] == "broad consent", purpose
            study_services.check_startable(st, [mds_dataset], purpose)
        else:
            assert row["decision"] == "pending" and "basis" not in row, purpose
            with pytest.raises(study_services.RunRefused, match="awaiting"):
                study_services.check_startable(st, [mds_dataset], purpose)
    with pytest.raises(study_services.RunRefused, match="awaiting"):  # not a purpose at all
        study_services.check_startable(st, [mds_dataset], "marketing")


@pytest.mark.django_db
def test_broad_consent_covers_only_studies_of_the_datasets_use_case(personas, mds_dataset):
    st = _study(personas, _register(mds_dataset, consent_scope="broad"))
    Study.objects.filter(pk=st.pk).update(use_case="AML")
    st.refresh_from_db()
    assert study_services.approval_state(st, "training")[0]["decision"] == "pending"


@pytest.mark.django_db
def test_the_nodes_announced_limits_tighten_broad_consent_at_the_manager(personas, approved_node, mds_dataset):
    node, _ = approved_node
    st = _study(personas, _register(mds_dataset, consent_scope="broad"))
    study_services.check_startable(st, [mds_dataset], "training")
    _limits(node, {"mds": {"consent_scope": "fine_grained"}})
    mds_dataset.refresh_from_db()
    with pytest.raises(study_services.RunRefused, match="awaiting"):
        study_services.check_startable(st, [mds_dataset], "training")
    _limits(node, {"*": {"purposes": ["analysis"]}})
    mds_dataset.refresh_from_db()
    assert study_services.approval_state(st, "analysis")[0]["basis"] == "broad consent"
    assert study_services.approval_state(st, "training")[0]["decision"] == "pending"


@pytest.mark.django_db
@pytest.mark.parametrize("policy, privacy, expected", [
    ({"sensitivity": "sensitive"}, {}, "enable DP-FedAvg"),
    ({"require_dp": True}, {}, "requires differential privacy"),
    ({"min_cell_count": 20}, {"min_cell_count": 10}, "raise the study's minimum cell count to at least 20"),
    ({"purposes": ["analysis", "synthesis"]}, {}, "purpose 'training' is not allowed"),
    ({"expires_on": "2020-01-31"}, {}, "expired on 2020-01-31"),
])
def test_start_refuses_a_run_the_node_would_refuse_with_the_remedy(personas, mds_dataset, policy, privacy,
                                                                    expected):
    st = _study(personas, _register(mds_dataset, **policy), privacy=privacy)
    with pytest.raises(study_services.RunRefused, match=expected) as err:
        study_services.start_run(personas["coordinator"], st)
    assert "mds" in str(err.value)
    assert not st.runs.exists()


@pytest.mark.django_db
def test_start_refuses_under_the_nodes_own_limits_too(personas, approved_node, mds_dataset):
    node, _ = approved_node
    st = _study(personas, mds_dataset, privacy={"min_cell_count": 10})  # no registered policy
    _limits(node, {"*": {"min_cell_count": 50}})
    mds_dataset.refresh_from_db()
    with pytest.raises(study_services.RunRefused, match="at least 50"):
        study_services.start_run(personas["coordinator"], st)


@pytest.mark.django_db
def test_local_limits_for_merges_the_star_entry_and_the_datasets_own_strictly(approved_node):
    node, _ = approved_node
    assert local_limits_for(node, "mds") == {}
    _limits(node, {"*": {"min_cell_count": 15, "purposes": ["training", "analysis"], "expires_on": "2027-03-01"},
                   "mds": {"min_cell_count": 5, "purposes": ["analysis", "synthesis"], "require_dp": True,
                           "expires_on": "2026-12-31"}})
    assert local_limits_for(node, "mds") == {"min_cell_count": 15, "purposes": ["analysis"], "require_dp": True,
                                             "expires_on": "2026-12-31"}
    assert local_limits_for(node, "scd") == {"min_cell_count": 15, "purposes": ["analysis", "training"],
                                             "expires_on": "2027-03-01"}
