"""The message protocol: every kind registered once with its node handler and reply check; an
unknown kind is refused naming the known ones; a reply carrying what its kind does not allow is
refused."""
import numpy as np
import pytest

from fl_engine.analytics.settings import validate_analysis
from fl_engine.federation.config import parse_run_config
from fl_engine.federation.core import NodeReply, NodeRequest, check_reply_privacy, handle_request
from fl_engine.federation.curves import CURVE_EDGES_MONTHS
from fl_engine.federation.flower_io import MESSAGE_TYPES
from fl_engine.federation.protocol import PROTOCOL, MessageKind, Protocol
from fl_engine.federation.synthesis import SYNTH_GENERATORS, encode_payload, synthesis_spec
from fl_engine.federation.synthesis.settings import federation

SURVIVAL = ("stats", "train", "evaluate", "baseline", "reference")
FEATURES = "age,sex,hb,plt,bm_blast,cyto_ipssr,TP53"
STATS = {"n": 3, "columns": {"hb": {"kind": "numeric", "missing": 0, "count": 3, "sum": 30.0, "sumsq": 301.0},
                             "sex": {"kind": "categorical", "missing": 0, "counts": {"F": 1, "M": 2}}}}
ROWS = np.array([[71.0, 9.8], [64.0, 11.2], [80.0, 8.1]])  # (age, hb) of three patients


def _synth(payload, metrics=None):
    skel, arrays = encode_payload(payload)
    return NodeReply("H1", arrays, metrics or {}, {"payload": skel})


def _share_request():
    skel, arrays = encode_payload({"columns": ["age", "hb"], "n_rows": 3})
    return NodeRequest("synth_share", arrays, {"payload": skel, "round": 1})


ANALYSIS = validate_analysis("MDS", "os", {"numeric": ["hb"], "categorical": ["sex"], "covariates": ["age"]})

# One reply each kind allows: (payload or reply fields, weight shapes sent, request).
ALLOWED = {
    "stats": (dict(stats=STATS, metrics={"n": 3}), None, None),
    "train": (dict(arrays=[np.zeros((2, 3))], metrics={"loss": 1.0, "n_train": 3}), [(2, 3)], None),
    "evaluate": (dict(metrics={"c_index": 0.6, "n_holdout": 3}), None, None),
    "baseline": (dict(arrays=[np.zeros(600), np.ones(600)]), None, None),
    "reference": (dict(arrays=[np.zeros((4, 2, len(CURVE_EDGES_MONTHS) - 1))], metrics={"isolated_c_index": 0.6}),
                  None, None),
    "cox_sums": (dict(arrays=[np.array([0.0, 2.0]), np.array([3.0, 2.0]), np.zeros((2, 3)), np.zeros((2, 3, 3)),
                              np.zeros(3)], metrics={"n_train": 3, "n_events": 2, "moved": 0}),
                 [(3,)], NodeRequest("cox_sums", [np.zeros(3)], {"stratified": False, "time_step_months": 1.0})),
    "synth_summary": ({"n": 3, "columns": {"sex": {"counts": np.array([1, 2])}}}, None, None),
    "synth_round": ({"n": 3, "params": {"w": np.zeros((2, 3))}}, [(2, 3)], None),
    "synth_mixture": ({"n": 3, "weights": np.ones(2) / 2, "means": np.zeros((2, 4)),
                       "covariances": np.stack([np.eye(4)] * 2)}, None, None),
    "synth_structure": ({"n": 3, "edges": [["age", "hb"]]}, None, None),
    "synth_counts": ({"n": 3, "counts": {"hb": np.zeros((5, 3))}}, None, None),
    "synth_validate": ({"n_train": 3, "parts": ["fidelity"], "scores": {"csf": 0.8, "gsf": 0.7}}, None, None),
    "synth_alone": ({"params": None}, None, None),
    "synth_share": (None, None, _share_request()),  # a node whose gate failed: scalars only
    "analysis_describe": (dict(arrays=[np.array([3.0]), np.r_[3.0, 0.0, 0.5, 2.1, 1.0, np.eye(200)[90] * 3],
                                       np.array([0.0, 1.0, 2.0])], metrics={"n": 3}), None,
                          NodeRequest("analysis_describe", [], {"use_case": "MDS", "min_cell": 0,
                                                                "settings": ANALYSIS})),
    "analysis_km": (dict(arrays=[np.array([0.0, 2.0]), np.array([1.0, 0.0]), np.array([0.0])],
                         metrics={"moved": 0}), None,
                    NodeRequest("analysis_km", [], {"use_case": "MDS", "min_cell": 0, "settings": ANALYSIS})),
    "analysis_cox": (dict(arrays=[np.array([0.0, 2.0]), np.array([3.0, 2.0]), np.zeros((2, 1)), np.zeros((2, 1, 1)),
                                  np.zeros(1), np.array([0.0, 2.0]), np.zeros((2, 1)), np.zeros((2, 1, 1))],
                          metrics={"n": 3, "events": 2, "moved": 0}), [(1,)],
                     NodeRequest("analysis_cox", [np.zeros(1)], {"use_case": "MDS", "min_cell": 0,
                                                                 "settings": ANALYSIS})),
}


def _allowed_reply(kind: str) -> NodeReply:
    content = ALLOWED[kind][0]
    if not kind.startswith("synth_"):
        return NodeReply("H1", **content)
    return NodeReply("H1", metrics={"gate_passed": 0.0}) if content is None else _synth(content, {"n_train": 3.0})


def _with_rows(kind: str) -> NodeReply:
    """The allowed reply plus a table of patient rows, where that kind's content goes."""
    rep = _allowed_reply(kind)
    if kind == "stats":
        return NodeReply("H1", arrays=[ROWS], stats=rep.stats, metrics=rep.metrics)
    if not kind.startswith("synth_"):
        return NodeReply("H1", arrays=rep.arrays, metrics=rep.metrics, stats={"rows": ROWS.tolist()})
    return _synth({**(ALLOWED[kind][0] or {}), "rows": ROWS}, rep.metrics)


def test_every_kind_is_registered_once_with_a_handler_and_a_reply_check():
    names = PROTOCOL.names()
    assert len(names) == len(set(names))
    assert set(names) == set(MESSAGE_TYPES), "every kind needs a Flower message type, and only kinds have one"
    assert set(ALLOWED) == set(names), "state what a reply of each new kind may carry (ALLOWED above)"
    for name in names:
        kind = PROTOCOL.kind(name)
        assert kind.name == name and callable(kind.handle) and callable(kind.check_reply), name


def test_an_unknown_kind_is_refused_naming_the_known_kinds(node_tables):
    cfg = parse_run_config({})
    with pytest.raises(ValueError, match="unknown message kind 'teleport'; known: stats, train") as err:
        handle_request(node_tables["H1"], cfg, NodeRequest("teleport"), "H1")
    assert all(k in str(err.value) for k in PROTOCOL.names())
    with pytest.raises(ValueError, match="unknown message kind 'synth_teleport'; known: .*synth_share"):
        check_reply_privacy("synth_teleport", NodeReply("H1", metrics={"n": 1}), None)
    with pytest.raises(ValueError, match="unknown message kind 'teleport'"):
        check_reply_privacy("teleport", NodeReply("H1"), None)  # even an empty reply


@pytest.mark.parametrize("kind", sorted(ALLOWED))
def test_a_reply_carrying_what_its_kind_does_not_allow_is_refused(kind):
    _, shapes, request = ALLOWED[kind]
    check_reply_privacy(kind, _allowed_reply(kind), shapes, request)
    with pytest.raises(ValueError, match=r"rows|column statistics|array\(s\)"):
        check_reply_privacy(kind, _with_rows(kind), shapes, request)
    rep = _allowed_reply(kind)
    rep.metrics["ages"] = ROWS[:, 0].tolist()  # values of patients as one "metric"
    with pytest.raises(ValueError, match="ages.*not a scalar number"):
        check_reply_privacy(kind, rep, shapes, request)


def test_the_registry_refuses_a_kind_twice_or_without_a_reply_check():
    proto = Protocol()
    kind = MessageKind("ping", handle=lambda df, cfg, req, name: NodeReply(name), check_reply=lambda *a: None)
    proto.register(kind)
    with pytest.raises(ValueError, match="'ping' is registered twice"):
        proto.register(kind)
    with pytest.raises(ValueError, match="'pong' needs a node handler and a reply check"):
        proto.register(MessageKind("pong", handle=kind.handle, check_reply=None))
    assert proto.names() == ("ping",)
    with pytest.raises(ValueError, match="unknown message kind 'pong'; known: ping"):
        proto.kind("pong")
    with pytest.raises(ValueError, match="no manager-side aggregation"):
        proto.aggregate("ping", {}, None)


@pytest.mark.parametrize("generator", SYNTH_GENERATORS)
def test_every_generator_step_travels_as_a_registered_kind_the_manager_aggregates(generator):
    cfg = parse_run_config({"task": "synthesis", "generator": generator, "features": FEATURES})
    steps = federation(cfg, synthesis_spec(cfg), None).steps()
    assert steps
    for step in steps:
        assert PROTOCOL.kind(f"synth_{step.name}").aggregate is not None, (generator, step.name)


def test_a_node_answers_only_the_steps_of_the_run_generator():
    from fl_engine.cohort import generate_mds_cohort

    cfg = parse_run_config({"task": "synthesis", "generator": "vae_bgm", "features": FEATURES})
    df = generate_mds_cohort(80, seed=2)
    with pytest.raises(ValueError, match="generator 'vae_bgm' has no step 'share'; its steps: round, mixture, alone"):
        handle_request(df, cfg, _share_request(), "H1")
