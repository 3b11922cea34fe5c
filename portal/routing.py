"""Websocket routes."""
from django.urls import path

from portal.studies import consumers

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", consumers.RunConsumer.as_asgi()),
]
