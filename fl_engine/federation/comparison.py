"""The comparison phase over the nodes' replies: the federation-wide figures beside the model,
and how many held-out patients each conventional score covered.

Each node's `reference` reply (fl_engine.federation.core.node_reference) carries, per score,
<score>_n (held-out patients it was computable on) and <score>_c_index, or
<score>_suppressed = 1 when the count is a small cell. Here they become global values: each C
patient-weighted over the nodes, and per score <score>_n (computable, summed over the nodes
that reported it: a lower bound when some count was suppressed), <score>_of (held-out patients
of the nodes that answered for it), <score>_coverage (n / of) and <score>_comparable (1 when
coverage >= fl_engine.scores.conventional.COVERAGE_MIN). A score under it gets no global C:
the comparison is refused, and `coverage_notes` says so in words.
"""
from __future__ import annotations

from fl_engine.federation.core import weighted_mean
from fl_engine.scores.conventional import LABELS, coverage_text, pooled_coverage

_PER_NODE_SUFFIXES = ("_c_index", "_n", "_suppressed")


def comparison_metrics(replies: dict[str, dict]) -> list[dict]:
    """Per-node comparison scalars (node_reference replies keyed by node name) + global values:
    isolated_c_index weighted by n_holdout, <score>_c_index by <score>_n for the scores covering
    at least COVERAGE_MIN of the held-out patients, and per score <score>_n, <score>_of,
    <score>_coverage, <score>_comparable (0/1) and <score>_suppressed_nodes."""
    out = []
    for node in sorted(replies):
        out += [{"node": node, "name": k, "value": float(v)} for k, v in sorted(replies[node].items())
                if k.endswith(_PER_NODE_SUFFIXES) and k != "curve_groups_suppressed" or k == "n_holdout"]
    cov = pooled_coverage(replies)
    names = sorted({k for m in replies.values() for k in m if k.endswith("_c_index")})
    for name in names:
        score = name[:-len("_c_index")]
        if name != "isolated_c_index" and not cov.get(score, {}).get("sufficient"):
            continue  # refused: a C on too few of the patients is not compared
        weight_key = "n_holdout" if name == "isolated_c_index" else score + "_n"
        pairs = [(m[name], m.get(weight_key, 0)) for m in replies.values() if name in m]
        if sum(w for _, w in pairs) > 0:
            out.append({"node": "global", "name": name,
                        "value": weighted_mean([v for v, _ in pairs], [w for _, w in pairs])})
    for score, c in sorted(cov.items()):
        out += [{"node": "global", "name": f"{score}_{k}", "value": float(v)} for k, v in (
            ("n", c["n"]), ("of", c["of"]), ("coverage", c["fraction"]), ("comparable", int(c["sufficient"])),
            ("suppressed_nodes", c["suppressed_nodes"]))]
    return out


def coverage_notes(metrics: list[dict]) -> list[str]:
    """One sentence per conventional score from comparison_metrics' global values: "IPSS-M C
    0.712 on 143 of 154 test patients", or the refusal when under COVERAGE_MIN."""
    g = {m["name"]: m["value"] for m in metrics if m["node"] == "global"}
    notes = []
    for score in LABELS:
        if f"{score}_of" not in g:
            continue
        n, of = int(g[f"{score}_n"]), int(g[f"{score}_of"])
        text = coverage_text(score, n, of, g.get(f"{score}_c_index"), "held-out test patients")
        withheld = int(g.get(f"{score}_suppressed_nodes", 0))
        if withheld:
            text += (f" ({withheld} hospital(s) withheld a count under the small-cell rule: at least "
                     f"{n} computable)")
        notes.append(text)
    return notes
