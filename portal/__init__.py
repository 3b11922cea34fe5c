"""FedHaem portal: the manager node's Django project."""
from portal.celery import app as celery_app

__all__ = ["celery_app"]
