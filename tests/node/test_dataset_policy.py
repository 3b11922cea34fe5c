"""The node applies its datasets' registered policies (fl_engine.node.policy) on every message:
fetched from a real HTTP manager with the node's token, tightened by the operator's own file."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from fl_engine.cohort import generate_mds_cohort
from fl_engine.federation.approval import ParticipationRefused
from fl_engine.node.approvals import ensure_approved
from fl_engine.node.datasets import register_table
from fl_engine.node.policy import PolicyError, merge_limits, stricter, validate_policy
from tests.federation.test_approval import FP, PRIVACY, _approval, _cfg, _settings

TODAY = dt.date(2026, 12, 4)


@pytest.fixture
def manager():
    """A manager answering GET /api/nodes/approvals/ with `state` (approvals, policies) and
    recording refusals."""
    state = {"approvals": [], "policies": [], "refusals": []}

    class Manager(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"approvals": state["approvals"], "policies": state["policies"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            state["refusals"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Manager)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{srv.server_port}"
    yield state
    srv.shutdown()
    srv.server_close()


def _node(tmp_path, manager, **kw):
    (tmp_path / "token").write_text(f"tok-{tmp_path.name}")
    (tmp_path / "data").mkdir(exist_ok=True)
    return {"manager": manager["url"], "token-file": str(tmp_path / "token"), "data-dir": str(tmp_path / "data"),
            "approval-cache-s": "0", "approval-retry-s": "0", **kw}


def _policy(fingerprint=FP, use_case="MDS", **change):
    return {"dataset": "mds", "fingerprint": fingerprint, "use_case": use_case,
            "policy": validate_policy({"consent_scope": "fine_grained", **change})}


@pytest.fixture(scope="module")
def mds_table():
    df = generate_mds_cohort(120, seed=3)
    return df[df["age"].notna()].reset_index(drop=True)


def _registered(node, table, use_case="MDS") -> str:
    """Register `table` as dataset mds (version 1) in the node's own registry; its fingerprint."""
    return register_table(node["data-dir"], "mds", table, use_case)["fingerprint"]


def _run(fp, settings=None, **change):
    """A run of study 41 whose participant hosp-a holds the table of fingerprint `fp`."""
    parts = json.dumps([{"node": "hosp-a", "node_id": "11", "fingerprint": fp, "version": "1"}])
    return _cfg(settings, study_id="41", participants=parts, **change)


def test_broad_consent_joins_a_new_study_of_its_use_case_without_approval_fine_grained_does_not(
        tmp_path, manager, mds_table):
    node = _node(tmp_path, manager)
    fp = _registered(node, mds_table)
    manager["policies"] = [_policy(fp, consent_scope="broad")]
    ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)  # no approval of study 41 at all
    # another use case is not covered by the broad consent
    other = _settings(use_case="AML")
    with pytest.raises(ParticipationRefused, match="no approval of study"):
        ensure_approved(node, _run(fp, other, use_case="AML"), "hosp-a", fp, today=TODAY)
    manager["policies"] = [_policy(fp, consent_scope="fine_grained")]
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):
        ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)
    assert manager["refusals"] and manager["refusals"][-1]["study"] == "41"
    manager["approvals"] = [_approval(study="41", fingerprint=fp)]
    ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)


def test_broad_consent_uses_the_use_case_of_the_nodes_own_registry_not_the_managers(
        tmp_path, manager, mds_table):
    node = _node(tmp_path, manager)
    fp = _registered(node, mds_table, use_case="MDS")
    aml = _settings(use_case="AML")
    # The manager claims the MDS table is an AML dataset: an AML study gets no broad consent from it.
    manager["policies"] = [_policy(fp, use_case="AML", consent_scope="broad")]
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):
        ensure_approved(node, _run(fp, aml, use_case="AML"), "hosp-a", fp, today=TODAY)
    assert manager["refusals"][-1]["study"] == "41"
    # ... and the MDS study the table was registered for is still covered, whatever the manager says.
    ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)
    # The registry's metadata passed by the ClientApp is used as it is (no second read).
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):
        ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY,
                        local_meta={"name": "mds", "fingerprint": fp, "use_case": "AML"})


def test_broad_consent_covers_nothing_when_the_registry_lacks_the_table(tmp_path, manager):
    node = _node(tmp_path, manager)  # empty registry: FP is not a table this node holds
    manager["policies"] = [_policy(consent_scope="broad")]
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):
        ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)


def test_broad_consent_does_not_cover_a_purpose_the_policy_does_not_allow(tmp_path, manager, mds_table):
    node = _node(tmp_path, manager)
    fp = _registered(node, mds_table)
    manager["policies"] = [_policy(fp, consent_scope="broad", purposes=["analysis"])]
    with pytest.raises(ParticipationRefused, match="purpose 'training' is not allowed"):
        ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)


def test_a_sensitive_dataset_refuses_a_run_without_dp(tmp_path, manager):
    node = _node(tmp_path, manager)
    manager["approvals"] = [_approval()]
    manager["policies"] = [_policy(sensitivity="sensitive")]
    with pytest.raises(ParticipationRefused, match="requires differential privacy"):
        ensure_approved(node, _cfg(), "hosp-a", FP, today=TODAY)
    dp = _settings(privacy={**PRIVACY, "dp_enabled": True})
    manager["approvals"] = [_approval(dp)]
    ensure_approved(node, _cfg(dp, dp_enabled=True), "hosp-a", FP, today=TODAY)


def test_an_expired_policy_stops_the_next_round(tmp_path, manager):
    node = _node(tmp_path, manager)
    manager["approvals"] = [_approval()]
    manager["policies"] = [_policy(expires_on="2026-12-04")]
    ensure_approved(node, _cfg(), "hosp-a", FP, today=TODAY)  # round 1: the last valid day
    with pytest.raises(ParticipationRefused, match="expired on 2026-12-04"):
        ensure_approved(node, _cfg(), "hosp-a", FP, today=TODAY + dt.timedelta(days=1))  # round 2


def test_no_registered_policy_behaves_as_before(tmp_path, manager):
    node = _node(tmp_path, manager)
    with pytest.raises(ParticipationRefused, match="no approval of study 7"):
        ensure_approved(node, _cfg(), "hosp-a", FP, today=TODAY)
    manager["approvals"] = [_approval()]
    ensure_approved(node, _cfg(), "hosp-a", FP, today=TODAY)


def test_the_operator_tightens_the_registered_policy_at_the_node_and_changes_are_logged(
        tmp_path, manager, mds_table):
    limits = tmp_path / "node-policy.json"
    limits.write_text(json.dumps({"mds": {"consent_scope": "fine_grained", "min_cell_count": 20}}))
    node = _node(tmp_path, manager, **{"policy-file": str(limits)})
    fp = _registered(node, mds_table)
    manager["policies"] = [_policy(fp, consent_scope="broad")]
    with pytest.raises(ParticipationRefused, match="below the policy's minimum of 20"):
        ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)
    limits.write_text(json.dumps({"mds": {"consent_scope": "fine_grained"}}))
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):  # the node's fine-grained wins
        ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)
    # Without the node's limit the registered broad consent covers study 41 ...
    limits.write_text(json.dumps({"*": {"min_cell_count": 5}, "mds": {"require_dp": False}}))
    ensure_approved(node, _run(fp), "hosp-a", fp, today=TODAY)  # ... and two partial limits do not make it fine-grained
    log = [json.loads(x) for x in (tmp_path / "data" / "policy-audit.jsonl").read_text().splitlines()]
    assert [e["policy"]["min_cell_count"] for e in log] == [20, 0, 5]
    assert log[0]["node_limits"] == {"consent_scope": "fine_grained", "min_cell_count": 20}


def test_policies_are_validated_and_merged_strictly():
    with pytest.raises(PolicyError) as err:
        validate_policy({"sensitivity": "secret", "min_cell_count": "5", "rows": []})
    assert {f for f, _ in err.value.problems} == {"sensitivity", "min_cell_count", "rows"}
    a = validate_policy({"consent_scope": "broad", "expires_on": "2027-01-01", "purposes": ["training", "analysis"]})
    got = stricter(a, {"purposes": ["analysis", "synthesis"], "expires_on": "2026-06-30", "require_dp": True})
    assert got["purposes"] == ["analysis"] and got["expires_on"] == "2026-06-30" and got["require_dp"] is True
    assert got["consent_scope"] == "broad"


def test_partial_limits_merge_field_by_field_and_stay_partial():
    body = {"*": {"min_cell_count": 5, "purposes": ["training", "analysis"]},
            "mds": {"require_dp": True, "min_cell_count": 3, "purposes": ["analysis", "synthesis"]}}
    assert merge_limits(body, "mds") == {"min_cell_count": 5, "purposes": ["analysis"], "require_dp": True}
    assert merge_limits(body, "other") == {"min_cell_count": 5, "purposes": ["analysis", "training"]}
    assert merge_limits({}, "mds") == {}
    assert merge_limits({"*": {"expires_on": "2027-01-01"}, "mds": {"expires_on": "2026-06-30",
                                                                     "consent_scope": "broad"}}, "mds") \
        == {"expires_on": "2026-06-30", "consent_scope": "broad"}
    with pytest.raises(PolicyError):
        merge_limits({"mds": {"min_cell_count": -1}}, "mds")


def test_fedhaem_node_start_refuses_a_malformed_policy_file_before_starting_anything(tmp_path, capsys):
    from fl_engine.node import cli

    bad = tmp_path / "limits.json"
    bad.write_text(json.dumps({"*": {"min_cell_count": "ten"}}))
    code = cli.main(["start", "--policy-file", str(bad), "--manager", "http://127.0.0.1:9", "--superlink",
                     "127.0.0.1:9", "--key-dir", str(tmp_path / "keys"), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "--policy-file" in err and "min_cell_count" in err
    assert not (tmp_path / "data").exists()  # nothing started, nothing created
    bad.write_text("[not json")
    code = cli.main(["start", "--policy-file", str(bad), "--manager", "http://127.0.0.1:9", "--superlink",
                     "127.0.0.1:9", "--key-dir", str(tmp_path / "keys"), "--data-dir", str(tmp_path / "data")])
    assert code == 2 and str(bad) in capsys.readouterr().err
