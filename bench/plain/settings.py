"""A minimal Django project with results in the database, as the notes set it up.

No taskdeck: Celery's own Django fix-up, django-celery-results' own
``django-db`` backend. The Celery settings that change the worker's work per
task are those of core/settings.py (extended results, STARTED tracked, acks
late, prefetch 1), so plain and taskdeck rows differ only in how results are
stored. The database is the one ``DATABASE_URL`` names, with the same SQLite
options as core/settings.py (WAL).
"""

import os

import dj_database_url

SECRET_KEY = "bench"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_celery_results"]
DATABASES = {"default": dj_database_url.config(env="DATABASE_URL")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

CELERY_BROKER_URL = os.environ["CELERY_BROKER"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_ACCEPT_CONTENT = ["application/json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "queue_order_strategy": "priority"}
CELERY_WORKER_SEND_TASK_EVENTS = False
