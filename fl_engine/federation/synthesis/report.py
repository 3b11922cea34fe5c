"""What a synthesis run reports: the metric records of each round, and its files
(synthetic.csv: the final cohort, synthetic rows only; synthesis.json: the pooled SAFE report
with the gate, per-round metrics, generator and parameters)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fl_engine.federation.config import RunConfig
from fl_engine.federation.loop import _finite
from generative.safe import pool_privacy


def round_metrics_synth(pooled: dict, node_reps: dict[str, dict], node_metrics: dict[str, dict]) -> list[dict]:
    """Metric records of one round: global and per-node CSF / GSF / NNDR p5, each node's alone_*
    scores (from `node_metrics`, the scalars of its replies), then the gate of each node's
    shared rows (gate_*, n_shared: sd_sharing)."""
    out = []
    for name in sorted(node_reps):
        rep = node_reps[name]
        for k in ("csf", "gsf"):
            out.append({"node": name, "name": k, "value": rep.get("scores", {}).get(k)})
        out.append({"node": name, "name": "nndr_p5", "value": _node_privacy(rep)})
        out.append({"node": name, "name": "n_train", "value": float(rep["n_train"])})
    for name in sorted(node_metrics):
        for k, v in node_metrics[name].items():
            if k.startswith("alone_"):
                out.append({"node": name, "name": k, "value": v})
    priv = pooled.get("privacy", {})
    for k, v in (("csf", pooled.get("csf")), ("gsf", pooled.get("gsf")), ("nndr_p5", pooled.get("nndr_p5")),
                 ("holdout_nndr_p5", priv.get("holdout_nndr_p5")), ("dcr_p5", priv.get("dcr_p5")),
                 ("mia_auc", priv.get("mia_auc")), ("tstr_c_index", pooled.get("tstr_c_index"))):
        if v is not None:
            out.append({"node": "global", "name": k, "value": v})
    out = [{**m, "value": float(m["value"])} for m in out if m["value"] is not None]
    return out + [{"node": n, "name": k, "value": float(v)} for n in sorted(node_metrics)
                  for k, v in node_metrics[n].items() if k.startswith("gate_") or k == "n_shared"]


def _node_privacy(rep: dict) -> float:
    return pool_privacy([rep["privacy"]])["nndr_p5"] if "privacy" in rep else float("nan")


def save_synthesis(model_dir: str | Path, cfg: RunConfig, out: dict) -> Path:
    """Write synthetic.csv and synthesis.json (`synthesis_files`) to `model_dir`."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in synthesis_files(cfg, out).items():
        (d / name).write_bytes(data)
    return d


def synthesis_files(cfg: RunConfig, out: dict) -> dict[str, bytes]:
    """{"synthetic.csv": the final cohort, "synthesis.json": report, gate, rounds, parameters}."""
    meta = {"task": "synthesis", "generator": cfg.generator, "generator_params": cfg.generator_params,
            "use_case": cfg.use_case, "endpoint": cfg.endpoint, "num_rounds": len(out["rounds"]),
            "local_epochs": cfg.local_epochs, "n_rows": int(len(out["synthetic"])),
            "nodes": out["nodes"], "n_train": out["n_train"], "spec": out["spec"],
            "report": {**out["report"], "gate": out["gate"]}, "gate": out["gate"], "rounds": out["rounds"]}
    return {"synthetic.csv": out["synthetic"].to_csv(index=False).encode(),
            "synthesis.json": json.dumps(_finite(_plain(meta)), indent=1).encode()}


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return o
