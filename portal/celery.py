"""Celery application: JSON only, settings from Django's CELERY_* names."""
import os

from celery import Celery

os.umask(0o077)  # var/ stays private: see portal.core.private_files

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("fedhaem")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
