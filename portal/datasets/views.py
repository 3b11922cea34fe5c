"""Dataset catalogue (metadata only) and each dataset's quality report."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render

from fedhaem_kernel.schema import SCHEMAS
from fl_engine.node import policy as node_policy
from portal.datasets import services
from portal.datasets.forms import PURPOSE_LABELS, RegistrationForm
from portal.datasets.selectors import announcements_to_register, can_register, datasets_visible_to
from portal.nodes.selectors import local_limits_for


def _need(request):
    if not request.user.has_perm("datasets.view_dataset"):
        raise PermissionDenied


@login_required
def dataset_list(request):
    _need(request)
    qs = datasets_visible_to(request.user).filter(catalogued_at__isnull=False)
    use_case = request.GET.get("use_case", "")
    if use_case:
        qs = qs.filter(use_case=use_case)
    return render(request, "datasets/dataset_list.html", {
        "datasets": qs, "use_case": use_case, "use_cases": sorted(SCHEMAS),
        "waiting": announcements_to_register(request.user).count()})


@login_required
def register_list(request):
    """The announcements of the user's hospital that wait for a clinician to register them."""
    _need(request)
    items = [(ds, can_register(request.user, ds)) for ds in announcements_to_register(request.user)]
    return render(request, "datasets/register_list.html", {"items": items})


def policy_rows(policy: dict | None) -> list[tuple[str, str]]:
    """The policy in words, field by field (a partial policy gives only its own fields)."""
    if policy is None:
        return []
    words = {"sensitivity": "Sensitivity", "consent_scope": "Consent scope", "purposes": "Allowed purposes",
             "require_dp": "Differential privacy required", "min_cell_count": "Minimum small-cell threshold",
             "expires_on": "Expires on"}
    rows = []
    for k, label in words.items():
        if k not in policy:
            continue
        v = policy[k]
        if k == "purposes":
            v = ", ".join(PURPOSE_LABELS.get(p, p).split(" (")[0] for p in v) or "none"
        elif k == "consent_scope":
            v = "broad" if v == "broad" else "fine-grained"
        elif k == "require_dp":
            v = "yes" if v else "no"
        elif k == "expires_on":
            v = v or "no expiry"
        rows.append((label, str(v)))
    return rows


@login_required
def register_dataset(request, pk: int):
    """The guided registration form (first registration and later changes)."""
    _need(request)
    ds = get_object_or_404(datasets_visible_to(request.user), pk=pk)
    if not can_register(request.user, ds):
        raise PermissionDenied("Only a clinician of the hospital holding this dataset may register it.")
    limits = local_limits_for(ds.node, ds.name)
    if request.method == "POST":
        form = RegistrationForm(request.POST)
        if form.is_valid():
            data, policy = form.registration_data()
            try:
                services.register(request.user, ds, data, policy)
            except services.RegistrationRefused as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"{ds.name} v{ds.version} is registered and in the catalogue; "
                                          f"node {ds.node.name} applies its policy from its next check.")
                return redirect("page-dataset-detail", pk=ds.pk)
    else:
        form = RegistrationForm(initial=RegistrationForm.initial_from(ds))
    return render(request, "datasets/register_form.html", {
        "ds": ds, "form": form, "limits": policy_rows(limits) if limits else [],
        "first": ds.catalogued_at is None})


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix} · {k}" if prefix else str(k))
    elif isinstance(value, list):
        yield prefix.replace("_", " "), ", ".join(map(str, value[:30])) + (" …" if len(value) > 30 else "")
    elif isinstance(value, float):
        yield prefix.replace("_", " "), f"{value:.3g}"
    else:
        yield prefix.replace("_", " "), str(value)


@login_required
def dataset_detail(request, pk: int):
    _need(request)
    ds = get_object_or_404(datasets_visible_to(request.user), pk=pk)
    schema = SCHEMAS.get(ds.use_case)
    present = set(ds.feature_schema or [])
    columns = []
    if schema is not None:
        for f in schema.features:
            columns.append({"name": f.name, "group": f.group, "description": f.description,
                            "unit": f.unit, "present": f.name in present})
    extra = sorted(present - {c["name"] for c in columns})
    limits = local_limits_for(ds.node, ds.name)
    effective = node_policy.effective_policy(ds.policy or None, limits or {})  # as the node applies it
    return render(request, "datasets/dataset_detail.html", {
        "ds": ds, "columns": columns, "extra_columns": extra,
        "quality": list(_flatten(ds.quality_report or {})),
        "policy": policy_rows(ds.policy), "limits": policy_rows(limits) if limits else [],
        "effective": policy_rows(effective), "can_register": can_register(request.user, ds),
    })
