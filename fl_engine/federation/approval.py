"""What a hospital approves, and the check each worker node makes before it touches its data.

A study's approved settings are one canonical JSON object (`study_settings`): use case, endpoint,
dataset name, features and feature groups, model and its parameters, the privacy options, the
most rounds a run may have and, for a study with analysis settings, those settings (grouping,
columns, bins: what a descriptive analysis discloses). `approval_hash` of that object is what an approval is bound to:
the portal stores it with the approval, the run config carries the object, and the node hashes
what it receives and checks that the run it is asked to serve stays inside it. Any change to a
run-relevant setting changes the hash, so the old approvals no longer match.
"""
from __future__ import annotations

import hashlib
import json

from fedhaem_kernel.schema import get_schema

PRIVACY_KEYS = ("min_patients_per_node", "min_cell_count", "dp_enabled", "dp_clip_norm", "dp_noise_multiplier")
SETTINGS_KEYS = ("use_case", "endpoint", "dataset", "features", "feature_groups", "model", "model_params",
                 "local_epochs", "privacy", "max_rounds")
# Hashed only when present and not empty, so a study without analysis settings keeps the hash
# (and the approvals) it had before analyses existed.
OPTIONAL_KEYS = ("analysis",)


class ParticipationRefused(PermissionError):
    """This node must not serve this run; the message says why (logged at the node, reported)."""


def study_settings(*, use_case: str, endpoint: str, dataset: str, features, feature_groups, model: str,
                   model_params: dict, local_epochs: int, privacy: dict, max_rounds: int,
                   analysis: dict | None = None) -> dict:
    """The canonical approved settings of a study (plain JSON values, lists sorted); `analysis`
    (the study's validated analysis settings) only when the study has some."""
    out = {
        "use_case": str(use_case).upper(), "endpoint": str(endpoint), "dataset": str(dataset),
        "features": sorted(str(f) for f in features), "feature_groups": sorted(str(g) for g in feature_groups),
        "model": str(model), "model_params": {k: model_params[k] for k in sorted(model_params)},
        "local_epochs": int(local_epochs),
        "privacy": {k: _plain(privacy[k]) for k in PRIVACY_KEYS},
        "max_rounds": int(max_rounds),
    }
    if analysis:
        out["analysis"] = json.loads(json.dumps(analysis))
    return out


def approval_hash(settings: dict) -> str:
    """sha256 hex of the canonical JSON of `settings` (keys sorted, no spaces)."""
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    if missing:
        raise ValueError(f"study settings lack {', '.join(missing)}")
    hashed = {k: settings[k] for k in SETTINGS_KEYS}
    hashed.update({k: settings[k] for k in OPTIONAL_KEYS if settings.get(k)})
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_outside_settings(cfg, settings: dict) -> list[str]:
    """How the run config `cfg` (RunConfig) leaves the approved `settings`; [] when it stays inside.

    Survival runs must use exactly the approved model, parameters, features and privacy options.
    Generation runs (task "synthesis") train a generator, not the study's model: they must keep
    the approved use case, endpoint, dataset and privacy options, and generate only approved
    features when the study lists them. Analysis runs must carry exactly the approved analysis
    settings and name approved columns only."""
    out = []

    def same(name, got, want):
        if got != want:
            out.append(f"{name} {got!r} differs from the approved {want!r}")

    same("use_case", cfg.use_case.upper(), settings["use_case"])
    same("endpoint", cfg.endpoint, settings["endpoint"])
    same("dataset", cfg.dataset, settings["dataset"])
    for k in PRIVACY_KEYS:
        same(k, _plain(getattr(cfg, k)), settings["privacy"][k])
    if cfg.num_rounds > settings["max_rounds"]:
        out.append(f"{cfg.num_rounds} rounds, more than the approved {settings['max_rounds']}")
    if cfg.task == "analysis":  # the approved analysis, of approved columns only; no model is trained
        approved = settings.get("analysis")
        if not approved:
            out.append("the approved settings hold no analysis: the study was approved without one")
        elif cfg.analysis != approved:
            changed = sorted(k for k in set(approved) | set(cfg.analysis or {})
                             if (cfg.analysis or {}).get(k) != approved.get(k))
            out.append(f"analysis settings differ from the approved ones: {', '.join(changed)}")
        allowed = _approved_columns(settings)
        a = cfg.analysis or {}
        used = set(a.get("numeric", [])) | set(a.get("categorical", [])) | set(a.get("covariates", []))
        if a.get("group_by") and a.get("group_by") != "hospital":
            used.add(a["group_by"])
        extra = sorted(used - allowed) if allowed is not None else []
        if extra:
            out.append(f"analyses columns outside the approved features: {extra}")
        return out
    if cfg.task == "synthesis":
        allowed = None
        if settings["features"]:
            allowed = set(settings["features"])
        elif settings["feature_groups"]:
            schema = get_schema(settings["use_case"])
            allowed = {f.name for f in schema.features if f.group in settings["feature_groups"]}
        extra = sorted(set(cfg.features) - allowed) if allowed is not None else []
        if extra:
            out.append(f"generates features outside the approved ones: {extra}")
        return out
    same("model", cfg.model, settings["model"])
    same("model_params", {k: cfg.model_params[k] for k in sorted(cfg.model_params)}, settings["model_params"])
    same("local_epochs", cfg.local_epochs, settings["local_epochs"])
    same("features", sorted(cfg.features), settings["features"])
    same("feature_groups", sorted(cfg.feature_groups), settings["feature_groups"])
    return out


def _approved_columns(settings: dict) -> set[str] | None:
    """The features a study approved (None = every feature of its use case)."""
    if settings["features"]:
        return set(settings["features"])
    if settings["feature_groups"]:
        schema = get_schema(settings["use_case"])
        return {f.name for f in schema.features if f.group in settings["feature_groups"]}
    return None


def check_participation(cfg, node_name: str, local_fingerprint: str, approvals: list[dict],
                        broad_consent: dict | None = None) -> None:
    """Raise ParticipationRefused unless this node (`node_name`, holding the dataset whose
    fingerprint is `local_fingerprint`) is a participant of run `cfg` and one of `approvals`
    (the manager's record of this node's approvals: {"study", "dataset", "fingerprint",
    "settings_hash"}) covers the study, the dataset and the exact settings the run carries.
    `broad_consent` ({"use_case", "fingerprint"}: the dataset's policy is broad and allows this
    run's purpose, as the node established) stands for an approval of any study of that use case
    on exactly that dataset; the run must still stay inside the settings it carries."""
    if not cfg.study_id:
        raise ParticipationRefused("the run names no study: this node serves only approved studies")
    me = next((p for p in cfg.participants if p["node"] == node_name), None)
    if me is None:
        raise ParticipationRefused(f"node {node_name} is not a participant of study {cfg.study_id}'s run "
                                   f"(participants: {', '.join(p['node'] for p in cfg.participants) or 'none'})")
    if me["fingerprint"] and me["fingerprint"] != local_fingerprint:
        raise ParticipationRefused(f"the run expects dataset fingerprint {me['fingerprint'][:12]}..., this "
                                   f"node holds {local_fingerprint[:12] or 'none'}...")
    try:
        wanted = approval_hash(cfg.study_settings)
    except ValueError as err:
        raise ParticipationRefused(f"the run carries no valid study settings: {err}") from None
    outside = run_outside_settings(cfg, cfg.study_settings)
    if outside:
        raise ParticipationRefused("the run leaves the approved settings: " + "; ".join(outside))
    for a in approvals:
        if (str(a.get("study")) == str(cfg.study_id) and a.get("dataset") == cfg.dataset
                and a.get("fingerprint") == local_fingerprint and a.get("settings_hash") == wanted):
            return
    if (broad_consent and broad_consent.get("fingerprint") == local_fingerprint
            and str(broad_consent.get("use_case", "")).upper() == cfg.study_settings.get("use_case")):
        return
    raise ParticipationRefused(f"no approval of study {cfg.study_id} on dataset {cfg.dataset} "
                               f"(fingerprint {local_fingerprint[:12]}...) for settings {wanted[:12]}... "
                               "(not approved, withdrawn, or approved before the study changed)")


def _plain(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return v
