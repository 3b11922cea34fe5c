"""Analysis runs in the portal without Flower processes: who may start one (same roles and
approvals as a survival run), the run contract handed to the engine, the conclusion storing a
report or refusing a malformed one with the reason, the report API and CSV downloads with the
survival runs' scoping, the live page and the study report."""
import csv
import dataclasses
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db

FEATURES = ["age", "sex", "hb", "plt", "bm_blast", "cyto_ipssr", "TP53", "SF3B1"]


def sample_report(hospitals=("hosp-a-node",)) -> dict:
    """A hand-written analysis.json (version 1) of an MDS study grouped by sex: two KM groups on
    a 1-month grid, a log-rank test, a two-covariate Cox model, a suppressed hospital cell."""
    def summary(n, mean):
        return {"n": n, "numeric": {"hb": {"n": n - 2, "missing": 2, "mean": mean, "sd": 1.5, "q25": mean - 1,
                                           "median": mean, "q75": mean + 1, "quantile_error": 0.05,
                                           "histogram": {"edges": [4, 6, 8, 10, 12, 14],
                                                         "counts": [None, 20, n - 52, 30, None]}}},
                "categorical": {"sex": {"missing": 0, "counts": {"F": n // 2, "M": n - n // 2}}}}
    time = [0.0, 1.0, 2.0, 3.0]
    return {
        "version": 1, "use_case": "MDS", "endpoint": "os", "time_unit": "months", "min_cell_count": 10,
        "hospitals": list(hospitals),
        "settings": {"analyses": ["describe", "km", "logrank", "cox"], "group_by": "sex", "numeric": ["hb"],
                     "categorical": ["sex"], "covariates": ["age", "hb"], "cox_stratified": False,
                     "cox_penalizer": 0.0, "time_step_months": 1.0, "quantile_bins": 200,
                     "at_risk_every_months": 12.0},
        "describe": {"pooled": summary(300, 9.5), "by_hospital": {h: summary(300, 9.5) for h in hospitals},
                     "by_group": {"F": summary(150, 9.1), "M": summary(150, 9.9), "unknown": None}},
        "km": {"groups": {
            "F": {"time": time, "survival": [1.0, 0.9, 0.8, 0.75], "lower": [1.0, 0.85, 0.73, 0.67],
                  "upper": [1.0, 0.94, 0.86, 0.82], "at_risk": [150, 135, 120, 110], "events": [0, 15, 15, None],
                  "median": None, "median_ci": [None, None]},
            "M": {"time": time, "survival": [1.0, 0.8, 0.6, 0.45], "lower": [1.0, 0.73, 0.52, 0.37],
                  "upper": [1.0, 0.86, 0.68, 0.53], "at_risk": [150, 120, 90, 67], "events": [0, 30, 30, 22],
                  "median": 2.6, "median_ci": [2.1, 3.0]}},
            "at_risk_table": {"times": [0.0, 12.0], "groups": {"F": [150, 40], "M": [150, None]}}},
        "logrank": {"statistic": 12.345, "df": 1, "p": 0.00044, "groups": ["F", "M"]},
        "logrank_stratified": {"statistic": 11.9, "df": 1, "p": 0.00056},
        "cox": {"covariates": ["age", "hb"], "coef": [0.03, -0.2], "se": [0.01, 0.05], "hr": [1.0305, 0.8187],
                "hr_lower": [1.0105, 0.7423], "hr_upper": [1.0509, 0.9030], "p": [0.0027, 0.00006],
                "stratified": False, "n": 298, "events": 112, "iterations": 5, "loglik": -523.4},
        "notes": ["Group 'unknown' has fewer than 10 patients: its description is suppressed.",
                  "hosp-a-node merged grid steps with fewer than 10 patients at risk after month 40."],
    }


@pytest.fixture
def study(personas, approved_node):
    from portal.datasets.models import Dataset
    from portal.studies.models import Study

    node, _ = approved_node
    ds = Dataset.objects.create(node=node, name="mds", version=1, use_case="MDS", cdm_version="1.0",
                                patient_count=300, feature_schema=FEATURES + ["os_months", "os_event"],
                                fingerprint="f" * 64)
    s = Study.objects.create(title="MDS analysis", use_case="MDS", owner=personas["coordinator"], min_nodes=1,
                             hyperparameters={"local_epochs": 1},
                             analysis={"group_by": "sex", "numeric": ["hb"], "categorical": ["sex"],
                                       "covariates": ["age", "hb"]})
    s.datasets.add(ds)
    return s


def _approve(study, personas):
    from portal.studies import services

    services.decide_approval(personas["node_operator"], study, study.datasets.get(), "approved")


def _finished_run(study, personas, report=None):
    """An analysis run moved through the lifecycle to concluding with `report` as its analysis.json."""
    from fl_engine.federation import events as run_events
    from portal.analyses import services
    from portal.studies import lifecycle

    _approve(study, personas)
    run = services.start_analysis_run(personas["coordinator"], study)
    lifecycle.transition(run.pk, "starting")
    lifecycle.transition(run.pk, "running", flower_run_id="42")
    data = json.dumps(report if report is not None else sample_report()).encode()
    lifecycle.ingest_event(run.pk, {"seq": 1, "type": "phase", "phase": "describe"})
    lifecycle.ingest_event(run.pk, {"seq": 2, "type": "finished",
                                    "artefacts": {"analysis.json": run_events.pack_artefact(data)}})
    run.refresh_from_db()
    assert run.status == "concluding"
    return run


def test_only_coordinators_start_an_analysis_and_every_approval_is_needed(study, personas, api,
                                                                          django_capture_on_commit_callbacks):
    from portal.audit.models import AuditEvent

    url = f"/api/studies/{study.pk}/analysis-runs/"
    for role in ("clinician", "data_manager", "node_operator"):
        assert api(personas[role]).post(url).status_code == 403, role
    coord = api(personas["coordinator"])
    refused = coord.post(url)
    assert refused.status_code == 409 and "approval" in refused.json()["detail"]
    _approve(study, personas)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        started = coord.post(url)
    assert started.status_code == 201, started.json()
    body = started.json()
    assert body["kind"] == "analysis" and body["status"] == "queued" and not body["has_report"]
    assert body["analysis"]["group_by"] == "sex" and body["analysis"]["covariates"] == ["age", "hb"]
    assert body["page"] == f"/analysis-runs/{body['id']}/" and len(callbacks) == 1
    assert AuditEvent.objects.filter(action="run.start_analysis", object_id=str(body["id"])).exists()
    listed = api(personas["clinician"]).get(url)
    assert listed.status_code == 200 and [r["id"] for r in listed.json()] == [body["id"]]


def test_an_approval_does_not_outlive_an_edit_of_the_analysis_settings(study, personas, api):
    """The analysis settings are part of what a hospital approves: a finer histogram or another
    grouping after the approval leaves it stale, audited, and the run is refused until re-approval."""
    from portal.audit.models import AuditEvent
    from portal.studies import services

    _approve(study, personas)
    assert not any(a["stale"] for a in services.approval_state(study))
    services.update_study(personas["coordinator"], study, {"analysis": {**study.analysis, "quantile_bins": 5000}})
    assert [a["stale"] for a in services.approval_state(study)] == [True]
    assert AuditEvent.objects.filter(action="study.approvals_stale", object_id=str(study.pk)).exists()
    refused = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/analysis-runs/")
    assert refused.status_code == 409 and "approv" in refused.json()["detail"], refused.json()
    _approve(study, personas)
    started = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/analysis-runs/")
    assert started.status_code == 201, started.json()
    run = study.runs.get(pk=started.json()["id"])
    # the run carries the edited settings, bound to the new approval (the node checks both)
    assert run.config["study_settings"]["analysis"]["quantile_bins"] == 5000
    assert run.config["analysis"] == run.config["study_settings"]["analysis"]
    assert services.settings_hash(study) == study.approvals.get().settings_hash


def test_a_study_without_valid_analysis_settings_is_refused_naming_the_field(study, personas, api):
    """A study without analysis settings cannot run one, and the refusal names the field."""
    from portal.studies.models import Run

    _approve(study, personas)
    study.analysis = {}
    study.save()
    r = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/analysis-runs/")
    assert r.status_code == 400 and "analysis" in r.json()["errors"], r.json()
    study.analysis = {"group_by": "not_a_column"}
    study.save()
    r = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/analysis-runs/")
    assert r.status_code == 400 and "not_a_column" in r.json()["detail"], r.json()
    assert not Run.objects.filter(study=study).exists()


def test_a_node_that_cannot_take_part_refuses_the_start(study, personas, api):
    from portal.nodes.models import WorkerNode

    _approve(study, personas)
    WorkerNode.objects.update(flower_node_id="")
    r = api(personas["coordinator"]).post(f"/api/studies/{study.pk}/analysis-runs/")
    assert r.status_code == 409 and "no Flower node id" in r.json()["detail"]


def test_flower_config_is_a_valid_analysis_contract(study, personas):
    from fl_engine.federation.config import parse_contract
    from portal.analyses import services
    from portal.studies import lifecycle

    _approve(study, personas)
    run = services.start_analysis_run(personas["coordinator"], study)
    contract = lifecycle.kind_of(run).flower_config(run)
    cfg = parse_contract(contract)
    assert cfg.task == "analysis" and cfg.num_rounds == 1
    assert cfg.analysis["group_by"] == "sex" and cfg.analysis["covariates"] == ["age", "hb"]
    assert cfg.analysis["analyses"] == ["describe", "km", "logrank", "cox"]
    assert cfg.min_cell_count == study.privacy["min_cell_count"]
    assert cfg.events_url.endswith(f"/api/runs/{run.pk}/events/") and cfg.comparison is False
    assert [p["node"] for p in cfg.participants] == ["hosp-a-node"]


def test_the_conclusion_stores_the_report_once(study, personas):
    from portal.analyses.models import AnalysisReport
    from portal.studies import lifecycle

    run = _finished_run(study, personas)
    assert lifecycle.conclude(run.pk) == "finished"
    rep = AnalysisReport.objects.get(run=run)
    assert rep.content["cox"]["hr"] == [1.0305, 0.8187] and rep.content["hospitals"] == ["hosp-a-node"]
    run.refresh_from_db()
    assert lifecycle.kind_of(run).conclude(run, lifecycle.artefacts(run)) == ""  # a redelivered conclusion
    assert AnalysisReport.objects.filter(run=run).count() == 1


def _broken(change):
    rep = sample_report()
    change(rep)
    return rep


@pytest.mark.parametrize("report, words", [
    (_broken(lambda r: r.pop("version")), "version"),
    (_broken(lambda r: r["km"]["groups"]["F"]["survival"].pop()), "km.groups.F"),
    (_broken(lambda r: r["cox"]["hr"].append(2.0)), "cox"),
    (_broken(lambda r: r["describe"]["pooled"]["numeric"]["hb"]["histogram"]["counts"].pop()), "histogram"),
    (_broken(lambda r: r["km"]["at_risk_table"]["groups"]["M"].append(3)), "at_risk_table"),
    (_broken(lambda r: r.update(use_case="AML")), "use_case"),
])
def test_a_malformed_report_fails_the_run_naming_the_field(study, personas, report, words):
    from portal.analyses.models import AnalysisReport
    from portal.studies import lifecycle

    run = _finished_run(study, personas, report)
    assert lifecycle.conclude(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and "analysis.json" in run.error and words in run.error, run.error
    assert not AnalysisReport.objects.filter(run=run).exists()


def test_nan_or_a_missing_file_is_refused_with_the_reason(study, personas):
    from portal.analyses import services
    from portal.analyses.report import ReportRefused, parse_report

    with pytest.raises(ReportRefused, match="cox.coef"):
        parse_report(json.dumps(sample_report()).replace("0.03", "NaN").encode())
    with pytest.raises(ReportRefused, match="not valid JSON"):
        parse_report(b"{nope")
    run = _finished_run(study, personas)
    why = services.conclude_analysis(run, {"model.npz": b""})
    assert "analysis.json missing" in why and "model.npz" in why


def test_report_api_and_csv_follow_the_run_scoping(study, personas, api):
    from portal.studies import lifecycle

    run = _finished_run(study, personas)
    assert api(personas["clinician"]).get(f"/api/analysis-runs/{run.pk}/report/").status_code == 404  # not yet
    lifecycle.conclude(run.pk)
    for who in ("clinician", "coordinator", "node_operator", "administrator", "data_manager"):
        r = api(personas[who]).get(f"/api/analysis-runs/{run.pk}/report/")
        assert r.status_code == 200, who
        assert r.json()["report"]["logrank"]["statistic"] == 12.345
    # a node operator of another hospital does not see runs of studies without its datasets
    assert api(personas["outsider"]).get(f"/api/analysis-runs/{run.pk}/report/").status_code == 404
    assert api(personas["outsider"]).get(f"/api/analysis-runs/{run.pk}/km.csv").status_code == 404
    assert api(personas["norole"]).get(f"/api/analysis-runs/{run.pk}/report/").status_code == 403
    assert api().get(f"/api/analysis-runs/{run.pk}/report/").status_code in (401, 403)
    assert api(personas["clinician"]).get(f"/api/analysis-runs/{run.pk}/bogus.csv").status_code == 404


def _csv(resp):
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/csv")
    assert "attachment" in resp["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(resp.content.decode())))


def test_csv_downloads_hold_the_report_tables(study, personas, api, client):
    from portal.audit.models import AuditEvent
    from portal.studies import lifecycle

    run = _finished_run(study, personas)
    lifecycle.conclude(run.pk)
    reader = api(personas["clinician"])
    km = _csv(reader.get(f"/api/analysis-runs/{run.pk}/km.csv"))
    assert len(km) == 8 and {r["group"] for r in km} == {"F", "M"}
    m3 = next(r for r in km if r["group"] == "M" and float(r["time"]) == 3.0)
    assert (float(m3["survival"]), float(m3["lower"]), int(m3["at_risk"]), int(m3["events"])) == (0.45, 0.37, 67, 22)
    f3 = next(r for r in km if r["group"] == "F" and float(r["time"]) == 3.0)
    assert f3["events"] == ""  # suppressed small cell stays empty, never 0
    at_risk = _csv(reader.get(f"/api/analysis-runs/{run.pk}/at_risk.csv"))
    assert [(r["group"], float(r["time"]), r["at_risk"]) for r in at_risk] == [
        ("F", 0.0, "150"), ("F", 12.0, "40"), ("M", 0.0, "150"), ("M", 12.0, "")]
    cox = _csv(reader.get(f"/api/analysis-runs/{run.pk}/cox.csv"))
    assert [r["covariate"] for r in cox] == ["age", "hb"] and float(cox[1]["hr_upper"]) == 0.9030
    desc = _csv(reader.get(f"/api/analysis-runs/{run.pk}/describe.csv"))
    pooled_hb = next(r for r in desc if r["scope"] == "pooled" and r["column"] == "hb")
    assert (pooled_hb["n"], float(pooled_hb["mean"]), float(pooled_hb["quantile_error"])) == ("298", 9.5, 0.05)
    shares = [float(r["share"]) for r in desc if r["scope"] == "group" and r["name"] == "F" and r["column"] == "sex"]
    assert sum(shares) == pytest.approx(1.0)
    assert any(r["kind"] == "suppressed" and r["name"] == "unknown" for r in desc)
    client.force_login(personas["clinician"])
    page_csv = client.get(f"/analysis-runs/{run.pk}/cox.csv")
    assert page_csv.status_code == 200 and page_csv.content.decode() == reader.get(
        f"/api/analysis-runs/{run.pk}/cox.csv").content.decode()
    assert AuditEvent.objects.filter(action="analysis.download", object_id=str(run.pk)).count() == 6


def test_run_page_study_page_and_study_report(study, personas, client):
    from portal.studies import lifecycle

    client.force_login(personas["coordinator"])
    page = client.get(f"/studies/{study.pk}/")
    assert b'id="start-analysis"' in page.content
    run = _finished_run(study, personas)
    live = client.get(f"/analysis-runs/{run.pk}/")
    assert live.status_code == 200 and b"Cancel this run" not in live.content  # concluding
    assert [p["state"] for p in live.context["phases"]] == ["running", "waiting", "waiting"]
    assert client.get(f"/runs/{run.pk}/").url == f"/analysis-runs/{run.pk}/"
    lifecycle.conclude(run.pk)
    client.force_login(personas["clinician"])
    assert b'id="start-analysis"' not in client.get(f"/studies/{study.pk}/").content  # clinicians only view
    done = client.get(f"/analysis-runs/{run.pk}/")
    html = done.content.decode()
    assert [p["state"] for p in done.context["phases"]] == ["done", "done", "done"]
    for fragment in ('id="chart-km"', 'id="chart-forest"', 'id="at-risk"', "p = &lt; 0.001", "χ² = 12.345",
                     "has fewer than 10 patients", 'id="csv-km"', "2.1 – 3.0", "not reached",
                     "merged grid steps with fewer than 10 patients"):
        assert fragment in html, fragment
    assert done.context["notes"]["other"] == sample_report()["notes"]  # neither scope/column nor KM/Cox
    plots = done.context["plots"]
    assert set(plots["km"]) == {"F", "M"} and plots["cox"]["covariates"] == ["age", "hb"]
    # fine bins regrouped for the eye (the quantiles used them); the suppressed bin is flagged
    assert plots["histograms"]["hb"]["counts"] == [0, 20, 248, 30, 0]
    assert plots["histograms"]["hb"]["partial"] == [True, False, False, False, True]
    assert plots["categories"]["sex"] == {"F": 150, "M": 150}
    report = client.get(f"/studies/{study.pk}/report/")
    assert report.status_code == 200
    text = report.content.decode()
    assert f"Federated analysis (run {run.pk})" in text and 'id="report-chart-forest"' in text
    assert "report-analysis-plots" in text
    standalone = client.get(f"/studies/{study.pk}/report/?download=1").content.decode()
    assert "FedHaemAnalysisPlots" in standalone  # the downloaded report draws its figures without the portal


def test_outsider_cannot_open_the_run_page(study, personas, client):
    run = _finished_run(study, personas)
    client.force_login(personas["outsider"])
    assert client.get(f"/analysis-runs/{run.pk}/").status_code == 404
    client.force_login(personas["norole"])
    assert client.get(f"/analysis-runs/{run.pk}/").status_code in (302, 403)


def test_cancel_is_the_lifecycle_cancel_and_is_audited(study, personas, api):
    from portal.analyses import services
    from portal.audit.models import AuditEvent

    _approve(study, personas)
    run = services.start_analysis_run(personas["coordinator"], study)
    assert api(personas["clinician"]).post(f"/api/runs/{run.pk}/cancel/").status_code == 403
    r = api(personas["coordinator"]).post(f"/api/runs/{run.pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert AuditEvent.objects.filter(action="run.cancel", object_id=str(run.pk)).exists()


def test_the_engine_run_from_the_portal_contract_concludes_into_the_report(study, personas, api):
    """The contract the portal hands Flower, run by the engine's in-process executor over three
    generated MDS hospitals: its analysis.json passes the portal's check, is stored unchanged
    and the CSV downloads carry its figures."""
    from fl_engine.cohort import generate_mds_cohort, split_nodes
    from fl_engine.federation import events as run_events
    from fl_engine.federation.config import parse_contract
    from fl_engine.federation.executor import run_analysis_in_process
    from portal.analyses import services
    from portal.studies import lifecycle

    _approve(study, personas)
    run = services.start_analysis_run(personas["coordinator"], study)
    cfg = parse_contract(services.flower_analysis_config(run))
    # in process: no events endpoint and the three generated hospitals instead of the study's node
    cfg = dataclasses.replace(cfg, events_url="", min_nodes=3, participants=())
    parts = split_nodes(generate_mds_cohort(n=600, seed=3), (0.5, 0.3, 0.2), seed=3)
    doc, _ = run_analysis_in_process(cfg, {f"hosp-{i}": p for i, p in enumerate(parts)})
    data = json.dumps(doc, allow_nan=False).encode()
    lifecycle.transition(run.pk, "starting")
    lifecycle.transition(run.pk, "running", flower_run_id="7")
    for seq, phase in enumerate(("describe", "km", "cox"), start=1):
        lifecycle.ingest_event(run.pk, {"seq": seq, "type": "phase", "phase": phase, "round": 1})
    lifecycle.ingest_event(run.pk, {"seq": 4, "type": "finished",
                                    "artefacts": {"analysis.json": run_events.pack_artefact(data)}})
    assert lifecycle.conclude(run.pk) == "finished"
    run.refresh_from_db()
    assert run.analysis_report.content == json.loads(data)
    assert run.analysis_report.content["hospitals"] == ["hosp-0", "hosp-1", "hosp-2"]
    reader = api(personas["clinician"])
    cox = _csv(reader.get(f"/api/analysis-runs/{run.pk}/cox.csv"))
    assert [r["covariate"] for r in cox] == doc["cox"]["covariates"]
    assert [float(r["hr"]) for r in cox] == pytest.approx(doc["cox"]["hr"], rel=1e-12)
    km = _csv(reader.get(f"/api/analysis-runs/{run.pk}/km.csv"))
    assert len(km) == sum(len(g["time"]) for g in doc["km"]["groups"].values())
    assert set(doc["km"]["groups"]) == {"F", "M"}


def test_notes_are_shown_with_the_section_they_concern():
    from portal.analyses.selectors import notes_by_section

    rep = {"hospitals": ["hosp-a-node"], "notes": [
        "pooled/age: histogram bins merged", "hosp-a-node/hb: missing: a count below the threshold",
        "group HbSC/sex=F: a count below", "Kaplan-Meier: group HbSC at hospital hosp-a-node has too few",
        "log-rank: fewer than two groups", "Cox: 12 patients' times were coarsened",
        "km: hospital hosp-b-node did not answer (timeout)"]}
    out = notes_by_section(rep)
    assert out["describe"] == rep["notes"][:3]
    assert out["km"] == rep["notes"][3:5] and out["cox"] == [rep["notes"][5]]
    assert out["other"] == [rep["notes"][6]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 500)), min_size=1, max_size=400), st.integers(1, 60))
def test_coarse_histograms_keep_the_reported_total_and_the_range(counts, max_bins):
    from portal.analyses.selectors import coarse_histogram

    edges = [float(i) * 0.5 for i in range(len(counts) + 1)]
    out = coarse_histogram({"edges": edges, "counts": counts}, max_bins)
    assert len(out["edges"]) == len(out["counts"]) + 1 == len(out["partial"]) + 1
    assert len(out["counts"]) <= max_bins
    assert sum(out["counts"]) == sum(c for c in counts if c is not None)
    assert out["edges"] == sorted(out["edges"]) and out["edges"][0] >= edges[0] and out["edges"][-1] <= edges[-1]
    assert any(out["partial"]) == any(c is None for c in counts)
    filled = [i for i, c in enumerate(counts) if c is None or c > 0]
    if filled:  # trimmed to the bins that hold patients (or a suppressed cell)
        assert (out["edges"][0], out["edges"][-1]) == (edges[filled[0]], edges[filled[-1] + 1])


def test_an_analysis_without_cox_has_no_cox_table_or_forest_plot(study, personas, api, client):
    from portal.studies import lifecycle

    rep = sample_report()
    rep["cox"] = None
    rep["settings"]["analyses"] = ["describe", "km", "logrank"]
    run = _finished_run(study, personas, rep)
    assert lifecycle.conclude(run.pk) == "finished"
    reader = api(personas["clinician"])
    missing = reader.get(f"/api/analysis-runs/{run.pk}/cox.csv")
    assert missing.status_code == 404 and "no cox table" in missing.json()["detail"]
    assert reader.get(f"/api/analysis-runs/{run.pk}/km.csv").status_code == 200
    client.force_login(personas["clinician"])
    html = client.get(f"/analysis-runs/{run.pk}/").content.decode()
    assert 'id="chart-km"' in html and 'id="chart-forest"' not in html and 'id="csv-cox"' not in html


def test_category_shares_are_left_out_where_a_cell_is_suppressed():
    from portal.analyses.selectors import describe_rows

    rep = {"describe": {"pooled": {"n": 30, "categorical": {"genotype": {"missing": 0, "counts": {
        "HbSS": 20, "HbSC": 10}}}}, "by_hospital": {"h1": {"n": 18, "categorical": {"genotype": {
            "missing": 0, "counts": {"HbSS": 12, "HbSC": None}}}}}, "by_group": {}}}
    rows = {(r["name"], r["category"]): r for r in describe_rows(rep)}
    assert rows[("all hospitals", "HbSS")]["share"] == pytest.approx(2 / 3)
    assert rows[("h1", "HbSS")]["share"] is None and rows[("h1", "HbSC")]["count"] is None


def test_an_analysis_start_is_judged_by_the_datasets_policy_for_the_analysis_purpose(study, personas):
    """Broad consent that allows analysis starts an analysis without a per-study approval; a
    policy without the analysis purpose, or with a higher minimum cell count than the study's,
    refuses the start with the reason and the remedy, and stores no run."""
    from fl_engine.node.policy import validate_policy
    from portal.analyses import services
    from portal.studies.models import Run

    ds = study.datasets.get()
    ds.policy = validate_policy({"consent_scope": "broad", "purposes": ["training"]})
    ds.save(update_fields=["policy"])
    with pytest.raises(services.AnalysisRefused, match="analysis"):
        services.start_analysis_run(personas["coordinator"], study)
    ds.policy = validate_policy({"consent_scope": "broad", "purposes": ["analysis"], "min_cell_count": 50})
    ds.save(update_fields=["policy"])
    with pytest.raises(services.AnalysisRefused, match="50"):
        services.start_analysis_run(personas["coordinator"], study)
    assert not Run.objects.filter(study=study).exists()
    ds.policy = validate_policy({"consent_scope": "broad", "purposes": ["analysis"]})
    ds.save(update_fields=["policy"])
    run = services.start_analysis_run(personas["coordinator"], study)  # no approval decided: broad consent
    assert run.kind == "analysis" and not study.approvals.exists()


def test_the_analysis_run_page_shows_what_each_hospitals_ledger_recorded(study, personas, client):
    """The node charges every run to its ledger (an analysis: no formal DP guarantee) and reports
    it in its heartbeat; the run page shows the line, or 'not reported yet'."""
    from portal.analyses import services
    from portal.nodes.models import WorkerNode

    _approve(study, personas)
    run = services.start_analysis_run(personas["coordinator"], study)
    client.force_login(personas["clinician"])
    page = client.get(f"/analysis-runs/{run.pk}/").content.decode()
    assert 'id="run-privacy-ledger"' in page and "not reported yet" in page
    node = study.datasets.get().node
    WorkerNode.objects.filter(pk=node.pk).update(privacy_spend={"datasets": [{
        "dataset": "mds", "budget_epsilon": 10.0, "budget_delta": 1e-5, "budget_source": "default",
        "spent_epsilon": 0.0, "spent_delta": 0.0, "dp_runs": 0, "runs": 1,
        "charges": [{"run": str(run.pk), "study": str(study.pk), "epsilon": None, "delta": None,
                     "time": "2026-12-04T11:00:00+00:00", "dp": False}]}]})
    page = client.get(f"/analysis-runs/{run.pk}/").content.decode()
    assert "no formal DP guarantee" in page and "not reported yet" not in page
