"""The worker node's own participation check (fl_engine.federation.approval): pure, no manager."""
from __future__ import annotations

import json

import pytest

from fl_engine.federation.approval import (
    ParticipationRefused, approval_hash, check_participation, run_outside_settings, study_settings,
)
from fl_engine.federation.config import parse_run_config

FP = "a" * 64
PRIVACY = {"min_patients_per_node": 20, "min_cell_count": 10, "dp_enabled": False, "dp_clip_norm": 1.0,
           "dp_noise_multiplier": 1.0}


def _settings(**change):
    base = dict(use_case="MDS", endpoint="os", dataset="mds", features=["hb", "age"], feature_groups=[],
                model="deepsurv", model_params={"hidden": [16]}, local_epochs=1, privacy=PRIVACY, max_rounds=5)
    base.update(change)
    return study_settings(**base)


def _cfg(settings=None, **change):
    settings = settings or _settings()
    flat = {"dataset": "mds", "use_case": "MDS", "endpoint": "os", "model": "deepsurv",
            "model_params": json.dumps({"hidden": [16]}), "features": "age,hb", "local_epochs": 1,
            "num_rounds": 3, "study_id": "7", "study_settings": json.dumps(settings),
            "participants": json.dumps([{"node": "hosp-a", "node_id": "11", "fingerprint": FP, "version": "1"},
                                        {"node": "hosp-b", "node_id": "12", "fingerprint": "b" * 64}]),
            **PRIVACY}
    flat.update(change)
    return parse_run_config(flat)


def _approval(settings=None, **change):
    return {"study": "7", "dataset": "mds", "fingerprint": FP,
            "settings_hash": approval_hash(settings or _settings()), **change}


def test_an_approved_run_passes():
    check_participation(_cfg(), "hosp-a", FP, [_approval()])


@pytest.mark.parametrize("why, kwargs", [
    ("not a participant", dict(node="hosp-z")),
    ("expects dataset fingerprint", dict(fingerprint="c" * 64)),
    ("no approval", dict(approvals=[])),
    ("no approval", dict(approvals=[_approval(study="8")])),
    ("no approval", dict(approvals=[_approval(settings_hash="0" * 64)])),  # approved before a change
    ("no approval", dict(approvals=[_approval(fingerprint="d" * 64)])),  # approved on another version
])
def test_the_node_refuses(why, kwargs):
    with pytest.raises(ParticipationRefused, match=why):
        check_participation(_cfg(), kwargs.get("node", "hosp-a"), kwargs.get("fingerprint", FP),
                            kwargs.get("approvals", [_approval()]))


@pytest.mark.parametrize("change, words", [
    ({"model_params": json.dumps({"hidden": [64]})}, "model_params"),
    ({"features": "age,hb,plt"}, "features"),
    ({"min_patients_per_node": 5}, "min_patients_per_node"),
    ({"dp_enabled": True}, "dp_enabled"),
    ({"num_rounds": 6}, "more than the approved 5"),
    ({"endpoint": "lfs"}, "endpoint"),
    ({"local_epochs": 4}, "local_epochs"),
])
def test_a_run_that_leaves_the_approved_settings_is_refused_even_with_the_old_hash(change, words):
    """The hash travels with the run, but the node checks the run's actual settings against it."""
    cfg = _cfg(**change)
    assert any(words in p for p in run_outside_settings(cfg, cfg.study_settings))
    with pytest.raises(ParticipationRefused, match="leaves the approved settings"):
        check_participation(cfg, "hosp-a", FP, [_approval()])


def test_a_run_without_a_study_is_refused():
    with pytest.raises(ParticipationRefused, match="names no study"):
        check_participation(_cfg(study_id=""), "hosp-a", FP, [_approval()])


def test_the_hash_changes_with_every_run_relevant_setting_and_not_with_order():
    base = approval_hash(_settings())
    assert approval_hash(_settings(features=["age", "hb"])) == base  # order is not a setting
    for change in (dict(features=["hb"]), dict(model="savae"), dict(max_rounds=6), dict(endpoint="lfs"),
                   dict(privacy={**PRIVACY, "min_cell_count": 5}), dict(local_epochs=2),
                   dict(model_params={"hidden": [17]}), dict(dataset="other")):
        assert approval_hash(_settings(**change)) != base, change


def test_synthesis_runs_stay_inside_the_approved_features():
    settings = _settings(features=[], feature_groups=["clinical"])
    ok = _cfg(settings, task="synthesis", features="age,hb", model_params="{}")
    assert run_outside_settings(ok, settings) == []
    wide = _cfg(settings, task="synthesis", features="age,hb,TP53", model_params="{}")
    assert "TP53" in run_outside_settings(wide, settings)[0]


def test_participants_are_validated():
    with pytest.raises(ValueError, match="participants"):
        parse_run_config({"participants": json.dumps([{"node": "a", "node_id": "x"}])})
    with pytest.raises(ValueError, match="twice"):
        parse_run_config({"participants": json.dumps([{"node": "a", "node_id": "1"}, {"node": "a", "node_id": "2"}])})


@pytest.mark.parametrize("params, words", [({"hidden": 10**9}, "ceiling"), ({"hidden": -5}, "positive"),
                                           ({"hidden": 0}, "positive"), ({"epochs": 1.5}, "integer")])
def test_generator_parameters_are_bounded(params, words):
    from fl_engine.federation.synthesis import generator_hyper

    with pytest.raises(ValueError, match=words):
        generator_hyper("vae_bgm", params)
    assert generator_hyper("vae_bgm", {"hidden": 64}) == {"hidden": 64}


def test_a_restarting_manager_does_not_stop_the_node_but_a_long_absence_does(tmp_path):
    """A real HTTP manager answers once, then goes away: within approval-stale-s the node keeps
    the last list it was given; past it the node refuses, naming the manager."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from fl_engine.node.approvals import fetch_approvals

    class Manager(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"approvals": [{"study": "7"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Manager)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    (tmp_path / "token").write_text(f"tok-{tmp_path.name}")
    cfg = {"manager": f"http://127.0.0.1:{srv.server_port}", "token-file": str(tmp_path / "token"),
           "approval-cache-s": "0", "approval-retry-s": "0"}
    assert fetch_approvals(cfg) == [{"study": "7"}]
    srv.shutdown()
    srv.server_close()
    assert fetch_approvals(cfg) == [{"study": "7"}]  # the manager is restarting: the last list
    with pytest.raises(ParticipationRefused, match="did not answer"):
        fetch_approvals({**cfg, "approval-stale-s": "0"})


def _analysis(**change):
    from fl_engine.analytics.settings import validate_analysis

    return validate_analysis("MDS", "os", {"numeric": ["age", "hb"], "categorical": [], "covariates": ["age"],
                                           "group_by": "hospital", **change})


def test_analysis_settings_are_bound_to_the_approval_and_checked_by_the_node():
    plain = approval_hash(_settings())
    # a study without analysis settings keeps the hash it had before analyses existed
    assert approval_hash(_settings(analysis={})) == plain
    approved = _settings(analysis=_analysis())
    assert approval_hash(approved) != plain
    for change in (dict(quantile_bins=5000), dict(group_by="sex"), dict(covariates=["age", "hb"]),
                   dict(time_step_months=0.5)):
        assert approval_hash(_settings(analysis=_analysis(**change))) != approval_hash(approved), change

    def run(analysis, settings):
        return _cfg(settings, task="analysis", analysis=json.dumps(analysis), model_params="{}")

    assert run_outside_settings(run(_analysis(), approved), approved) == []
    finer = run_outside_settings(run(_analysis(quantile_bins=5000), approved), approved)
    assert finer == ["analysis settings differ from the approved ones: quantile_bins"]
    # an analysis of a study approved without analysis settings is refused at the node
    bare = _settings()
    assert run_outside_settings(run(_analysis(), bare), bare) == [
        "the approved settings hold no analysis: the study was approved without one"]
    with pytest.raises(ParticipationRefused, match="quantile_bins"):
        check_participation(run(_analysis(quantile_bins=5000), approved), "hosp-a", FP, [_approval(approved)])
    check_participation(run(_analysis(), approved), "hosp-a", FP, [_approval(approved)])
