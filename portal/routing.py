"""Websocket routes."""
from django.urls import path, re_path

from portal.core.consumers import NotFoundConsumer
from portal.experiments.consumers import GridConsumer
from portal.studies.consumers import RunConsumer

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
    path("ws/grid-runs/<int:grid_id>/", GridConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),  # last: every other path is closed with 4404
]
