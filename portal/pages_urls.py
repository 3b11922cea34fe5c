"""Routes of the server-rendered pages (each app's views.py); the API lives under /api/."""
from django.urls import path

from portal.accounts import views as account_views
from portal.analyses import views as analysis_views
from portal.audit import views as audit_views
from portal.datasets import views as dataset_views
from portal.experiments import views as grid_views
from portal.nodes import views as node_views
from portal.studies import views as study_views
from portal.synthesis import views as cohort_views

urlpatterns: list = [
    path("studies/", study_views.study_list, name="page-study-list"),
    path("studies/new/", study_views.study_create, name="page-study-create"),
    path("studies/<int:pk>/edit/", study_views.study_edit, name="page-study-edit"),
    path("studies/<int:pk>/clone/", study_views.study_clone, name="page-study-clone"),
    path("studies/<int:pk>/start/", study_views.study_start, name="page-study-start"),
    path("studies/<int:pk>/decide/", study_views.study_decide, name="page-study-decide"),
    path("studies/<int:pk>/compare/", study_views.study_compare, name="page-study-compare"),
    path("studies/<int:pk>/report/", study_views.study_report, name="page-study-report"),
    path("runs/", study_views.run_list, name="page-run-list"),
    path("runs/<int:pk>/cancel/", study_views.run_cancel, name="page-run-cancel"),
    path("models/", study_views.model_list, name="page-model-list"),
    path("models/<int:pk>/", study_views.model_detail, name="page-model-detail"),
    path("models/<int:pk>/download/", study_views.model_download, name="page-model-download"),
    path("models/<int:pk>/capsule/", study_views.model_capsule, name="page-model-capsule"),
    path("models/<int:pk>/alias/", study_views.model_alias, name="page-model-alias"),
    path("models/<int:pk>/tag/", study_views.model_tag, name="page-model-tag"),
    path("nodes/", node_views.node_list, name="page-node-list"),
    path("nodes/<int:pk>/approve/", node_views.node_approve, name="page-node-approve"),
    path("nodes/<int:pk>/revoke/", node_views.node_revoke, name="page-node-revoke"),
    path("datasets/", dataset_views.dataset_list, name="page-dataset-list"),
    path("datasets/<int:pk>/", dataset_views.dataset_detail, name="page-dataset-detail"),
    path("datasets/register/", dataset_views.register_list, name="page-dataset-register-list"),
    path("datasets/<int:pk>/registration/", dataset_views.register_dataset, name="page-dataset-register"),
    path("cohorts/", cohort_views.cohort_list, name="page-cohort-list"),
    path("cohorts/<int:pk>/", cohort_views.cohort_detail, name="page-cohort-detail"),
    path("cohorts/<int:pk>/download/", cohort_views.cohort_download, name="page-cohort-download"),
    path("cohorts/<int:pk>/release/", cohort_views.cohort_release, name="page-cohort-release"),
    path("cohorts/<int:pk>/download.parquet", cohort_views.cohort_download_parquet, name="page-cohort-download-parquet"),
    path("studies/<int:pk>/generate/", cohort_views.generation_start, name="page-generation-start"),
    path("generation-runs/<int:pk>/", cohort_views.generation_run, name="page-generation-run"),
    path("studies/<int:pk>/analyse/", analysis_views.analysis_start, name="page-analysis-start"),
    path("analysis-runs/<int:pk>/", analysis_views.analysis_run, name="page-analysis-run"),
    path("analysis-runs/<int:pk>/<str:table>.csv", analysis_views.analysis_csv, name="page-analysis-csv"),
    path("studies/<int:pk>/grid/", grid_views.grid_start, name="page-grid-start"),
    path("grid-runs/<int:pk>/cancel/", grid_views.grid_cancel, name="page-grid-cancel"),
    path("grid-runs/<int:pk>/results.csv", grid_views.grid_results_csv, name="page-grid-results-csv"),
    path("audit/", audit_views.audit_list, name="page-audit-list"),
    path("preferences/", account_views.preferences, name="page-preferences"),
]

# The study and run pages are routed in urls.py; named here too so that pages reverse to them
# without colliding with the API router's "study-detail" / "run-detail".
urlpatterns += [
    path("studies/<int:pk>/", study_views.study_detail, name="page-study-detail"),
    path("runs/<int:pk>/", study_views.run_detail, name="page-run-detail"),
]
