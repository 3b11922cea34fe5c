"""Dataset catalogue (metadata only) and each dataset's quality report."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render

from fedhaem_kernel.schema import SCHEMAS
from portal.datasets.selectors import datasets_visible_to


def _need(request):
    if not request.user.has_perm("datasets.view_dataset"):
        raise PermissionDenied


@login_required
def dataset_list(request):
    _need(request)
    qs = datasets_visible_to(request.user)
    use_case = request.GET.get("use_case", "")
    if use_case:
        qs = qs.filter(use_case=use_case)
    return render(request, "datasets/dataset_list.html", {
        "datasets": qs, "use_case": use_case, "use_cases": sorted(SCHEMAS)})


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
    return render(request, "datasets/dataset_detail.html", {
        "ds": ds, "columns": columns, "extra_columns": extra,
        "quality": list(_flatten(ds.quality_report or {})),
    })
