from django.db.models import Q

from fl_engine.node import policy as node_policy

from portal.nodes.models import WorkerNode


def nodes_visible_to(user):
    qs = WorkerNode.objects.select_related("organisation")
    if user.has_perm("nodes.approve_workernode") or user.has_perm("studies.add_study") \
            or user.has_perm("studies.view_modelversion"):
        return qs
    return qs.filter(organisation=user.organisation)


def nodes_out_of_sync():
    """Nodes whose SuperLink registration does not match the portal: approved without a Flower
    node id (key not registered yet), or revoked while still registered."""
    return WorkerNode.objects.filter(
        Q(status=WorkerNode.Status.APPROVED, flower_node_id="", key_retired=False)
        | Q(status=WorkerNode.Status.REVOKED) & ~Q(flower_node_id=""))


def local_limits_for(node, dataset_name: str) -> dict:
    """The partial policy the node's announced local limits (`WorkerNode.policy_limits`, its
    policy-file) set for `dataset_name`: "*" then the dataset's own entry, the stricter wins field
    by field (fl_engine.node.policy.merge_limits, the node's own merge); {} when none. Limits
    that no longer validate (announced by an older node) count as none here: the node still
    applies its file, and the heartbeat that stored them would now be refused."""
    body = getattr(node, "policy_limits", None) or {}
    if not isinstance(body, dict):
        return {}
    try:
        return node_policy.merge_limits(body, str(dataset_name))
    except node_policy.PolicyError:
        return {}


def dataset_spend(node, dataset_name: str) -> dict | None:
    """The ledger summary `node` last reported for its dataset `dataset_name` (budget, spent,
    charges; fl_engine.node.budget.spend_report), or None when it reported none."""
    rows = ((getattr(node, "privacy_spend", None) or {}).get("datasets")) or []
    return next((r for r in rows if isinstance(r, dict) and r.get("dataset") == dataset_name), None)


def recorded_run_spend(run) -> list[dict]:
    """Per hospital of run `run` (its pinned datasets): {"node", "dataset", "reported_at", "charge"}
    where "charge" is the ledger line the hospital's node reported for this run ({"epsilon" (None:
    no DP guarantee), "delta", "time", "dp"}) or None when its node has not reported it (yet)."""
    pinned = [d for d in (run.config or {}).get("datasets") or [] if isinstance(d, dict)]
    nodes = {n.name: n for n in WorkerNode.objects.filter(name__in=[d.get("node") for d in pinned])}
    out = []
    for d in pinned:
        node = nodes.get(d.get("node"))
        row = dataset_spend(node, d.get("name")) if node is not None else None
        charge = next((c for c in (row or {}).get("charges") or [] if str(c.get("run")) == str(run.pk)), None)
        out.append({"node": d.get("node"), "dataset": d.get("name"), "charge": charge,
                    "reported_at": getattr(node, "privacy_reported_at", None)})
    return out


def budget_problems(datasets, epsilon: float, delta: float) -> list[str]:
    """Why a DP run charging (`epsilon`, `delta`) to each of `datasets` would take one past its
    privacy budget, as each node last reported its ledger (budget, spent, when), each with the
    figures; [] when none would. A node that reported nothing is judged at the node only: the
    ledger is the node's, and its report may lag by one heartbeat."""
    out = []
    for ds in datasets:
        row = dataset_spend(ds.node, ds.name)
        if not row:
            continue
        try:
            budget_eps, spent_eps = float(row["budget_epsilon"]), float(row["spent_epsilon"])
            budget_delta, spent_delta = float(row["budget_delta"]), float(row["spent_delta"])
        except (KeyError, TypeError, ValueError):
            continue
        if spent_eps + epsilon > budget_eps + 1e-9 or spent_delta + delta > budget_delta * (1 + 1e-9):
            when = getattr(ds.node, "privacy_reported_at", None)
            reported = f" (reported {when:%Y-%m-%d %H:%M} UTC)" if when else ""
            out.append(f"{ds}: its privacy budget is epsilon {budget_eps:g}, delta {budget_delta:g}, of which "
                       f"epsilon {spent_eps:.3g}, delta {spent_delta:.3g} is spent{reported}; this run would add "
                       f"epsilon {epsilon:.3g}, delta {delta:g}: raise the DP noise multiplier, run fewer "
                       "rounds, or ask the hospital's node operator about its budget")
    return out
