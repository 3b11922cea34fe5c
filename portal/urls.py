from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from portal.accounts.api import MeView, OrganisationViewSet
from portal.analyses.api import AnalysisCsvView, AnalysisReportView, AnalysisRunsView
from portal.audit.api import AuditEventViewSet
from portal.datasets.api import AnnounceView, DatasetViewSet
from portal.experiments.api import GridResultsCsvView, GridRunCancelView, GridRunView, StudyGridRunsView
from portal.nodes.api import HeartbeatView, NodeApprovalsView, NodeRefusalView, WorkerNodeViewSet
from portal.ops import views as ops_views
from portal.studies.api import ModelVersionViewSet, RunEventsView, RunViewSet, StudyViewSet
from portal.synthesis.api import GenerationRunsView, SyntheticCohortViewSet
from portal.studies import views as study_views

router = DefaultRouter()
router.register("organisations", OrganisationViewSet, basename="organisation")
router.register("nodes", WorkerNodeViewSet, basename="node")
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("studies", StudyViewSet, basename="study")
router.register("runs", RunViewSet, basename="run")
router.register("models", ModelVersionViewSet, basename="model")
router.register("audit", AuditEventViewSet, basename="audit")
router.register("cohorts", SyntheticCohortViewSet, basename="cohort")


def _admin_login(request, extra_context=None):
    # The admin site signs in through OIDC like every other page.
    return redirect_to_login(request.GET.get("next", "/admin/"))


admin.site.login = _admin_login
admin.site.site_header = "FedHaem administration"

api_patterns = [
    path("health/", ops_views.HealthView.as_view(), name="health"),
    path("me/", MeView.as_view(), name="me"),
    path("nodes/heartbeat/", HeartbeatView.as_view(), name="node-heartbeat"),
    path("nodes/datasets/", AnnounceView.as_view(), name="node-datasets"),
    path("nodes/approvals/", NodeApprovalsView.as_view(), name="node-approvals"),
    path("nodes/refusals/", NodeRefusalView.as_view(), name="node-refusals"),
    path("runs/<int:pk>/events/", RunEventsView.as_view(), name="run-events"),
    path("studies/<int:pk>/generation-runs/", GenerationRunsView.as_view(), name="study-generation-runs"),
    path("studies/<int:pk>/analysis-runs/", AnalysisRunsView.as_view(), name="study-analysis-runs"),
    path("analysis-runs/<int:pk>/report/", AnalysisReportView.as_view(), name="analysis-run-report"),
    path("analysis-runs/<int:pk>/<str:table>.csv", AnalysisCsvView.as_view(), name="analysis-run-csv"),
    path("studies/<int:pk>/grid-runs/", StudyGridRunsView.as_view(), name="study-grid-runs"),
    path("grid-runs/<int:pk>/", GridRunView.as_view(), name="grid-run-detail"),
    path("grid-runs/<int:pk>/cancel/", GridRunCancelView.as_view(), name="grid-run-cancel"),
    path("grid-runs/<int:pk>/results.csv", GridResultsCsvView.as_view(), name="grid-run-results-csv"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("", ops_views.home, name="home"),
    path("no-access/", ops_views.no_access, name="no-access"),
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("admin/", admin.site.urls),
    path("studies/<int:pk>/", study_views.study_detail, name="study-detail"),
    path("runs/<int:pk>/", study_views.run_detail, name="run-detail"),
    path("", include("portal.pages_urls")),
    path("api/", include(api_patterns)),
]
