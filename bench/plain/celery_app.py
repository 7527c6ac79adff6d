"""The notes' ``celery.py``, verbatim in spirit: Celery + Django settings + autodiscovery."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.plain.settings")

app = Celery("bench_plain")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing: the bench measures the machinery around it."""
