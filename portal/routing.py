"""Websocket routes."""
from django.urls import path

from portal.experiments.consumers import GridConsumer
from portal.studies.consumers import RunConsumer

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
    path("ws/grid-runs/<int:grid_id>/", GridConsumer.as_asgi()),
]
