"""The project's Celery app: the notes' "Initialization" section.

``create_celery_app`` does what the notes write out by hand::

    app = Celery("core")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()

Run a worker with ``celery -A core worker -Q high_priority -l info``.
"""

import os

from taskdeck.app import create_celery_app

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = create_celery_app("core")
