"""The node applies its datasets' registered policies (fl_engine.node.policy) on every message:
fetched from a real HTTP manager with the node's token, tightened by the operator's own file."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from fl_engine.federation.approval import ParticipationRefused
from fl_engine.node.approvals import ensure_approved
from fl_engine.node.policy import PolicyError, stricter, validate_policy
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


def _policy(**change):
    return {"dataset": "mds", "fingerprint": FP, "use_case": "MDS",
            "policy": validate_policy({"consent_scope": "fine_grained", **change})}


def test_broad_consent_joins_a_new_study_of_its_use_case_without_approval_fine_grained_does_not(tmp_path, manager):
    node = _node(tmp_path, manager)
    manager["policies"] = [_policy(consent_scope="broad")]
    ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)  # no approval of study 41 at all
    # another use case is not covered by the broad consent
    other = _settings(use_case="AML")
    with pytest.raises(ParticipationRefused, match="no approval of study"):
        ensure_approved(node, _cfg(other, use_case="AML", study_id="41"), "hosp-a", FP, today=TODAY)
    manager["policies"] = [_policy(consent_scope="fine_grained")]
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):
        ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)
    assert manager["refusals"] and manager["refusals"][-1]["study"] == "41"
    manager["approvals"] = [_approval(study="41")]
    ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)


def test_broad_consent_does_not_cover_a_purpose_the_policy_does_not_allow(tmp_path, manager):
    node = _node(tmp_path, manager)
    manager["policies"] = [_policy(consent_scope="broad", purposes=["analysis"])]
    with pytest.raises(ParticipationRefused, match="purpose 'training' is not allowed"):
        ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)


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


def test_the_operator_tightens_the_registered_policy_at_the_node_and_changes_are_logged(tmp_path, manager):
    limits = tmp_path / "node-policy.json"
    limits.write_text(json.dumps({"mds": {"consent_scope": "fine_grained", "min_cell_count": 20}}))
    node = _node(tmp_path, manager, **{"policy-file": str(limits)})
    manager["policies"] = [_policy(consent_scope="broad")]
    with pytest.raises(ParticipationRefused, match="below the policy's minimum of 20"):
        ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)
    limits.write_text(json.dumps({"mds": {"consent_scope": "fine_grained"}}))
    with pytest.raises(ParticipationRefused, match="no approval of study 41"):  # the node's fine-grained wins
        ensure_approved(node, _cfg(study_id="41"), "hosp-a", FP, today=TODAY)
    log = [json.loads(x) for x in (tmp_path / "data" / "policy-audit.jsonl").read_text().splitlines()]
    assert [e["policy"]["min_cell_count"] for e in log] == [20, 0]
    assert log[0]["node_limits"] == {"consent_scope": "fine_grained", "min_cell_count": 20}


def test_policies_are_validated_and_merged_strictly():
    with pytest.raises(PolicyError) as err:
        validate_policy({"sensitivity": "secret", "min_cell_count": "5", "rows": []})
    assert {f for f, _ in err.value.problems} == {"sensitivity", "min_cell_count", "rows"}
    a = validate_policy({"consent_scope": "broad", "expires_on": "2027-01-01", "purposes": ["training", "analysis"]})
    got = stricter(a, {"purposes": ["analysis", "synthesis"], "expires_on": "2026-06-30", "require_dp": True})
    assert got["purposes"] == ["analysis"] and got["expires_on"] == "2026-06-30" and got["require_dp"] is True
    assert got["consent_scope"] == "broad"
