"""Settings of the reference project.

Every ``CELERY_*`` name below is Celery's own new-style setting read through
``config_from_object(..., namespace="CELERY")``; ``TASKDECK`` holds
taskdeck's settings (see ``taskdeck/conf.py``). Why each Celery default was
changed is in docs/configuration.md.
"""

import os
import re
from importlib.util import find_spec
from pathlib import Path

import dj_database_url
import django

from taskdeck.datadir import secret_key
from taskdeck.lanes import NOTES_LANES, declare_queues, lanes_for
from taskdeck.preset import default_result_backend, sends_task_events
from taskdeck.routing import TaskRoutes

BASE_DIR = Path(__file__).resolve().parent.parent
# The embedded default keeps its files here: Redis socket and append-only
# file, SQLite database, logs. Git-ignored.
DATA_DIR = Path(os.environ.get("TASKDECK_DATA_DIR", BASE_DIR / ".taskdeck"))

# --- Production defaults (docs/deploying.md) ---------------------------------

# Debug pages list every URL and show server paths: only on request.
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
# Set one key for every host of a deployment; a single machine gets one
# generated into the data folder (mode 0600) on first start.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secret_key(DATA_DIR)
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
# HTTPS only (secure cookies, HSTS, redirect to https) when the site is served
# through TLS: on by default once DJANGO_SECRET_KEY is set (a deployment);
# `taskdeck up` alone on 127.0.0.1 serves plain HTTP. DJANGO_HTTPS=1/0 decides.
HTTPS = os.environ.get("DJANGO_HTTPS", "1" if os.environ.get("DJANGO_SECRET_KEY") else "0") == "1"
SECURE_SSL_REDIRECT = SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000")) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = os.environ.get("DJANGO_HSTS_INCLUDE_SUBDOMAINS", "1") == "1"
# Preloading is a commitment to the browsers' list that only the domain's
# owner can make: off unless asked for, and its reminder (W021) silenced.
SECURE_HSTS_PRELOAD = os.environ.get("DJANGO_HSTS_PRELOAD") == "1"
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Behind a TLS proxy that sets X-Forwarded-Proto (and strips the client's):
# the header that says the request came in over https. Empty: no proxy.
_proxy_ssl_header = os.environ.get("DJANGO_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO" if HTTPS else "")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]
# Logins refused for a while after repeated failures (taskdeck.dashboard.lockout).
AUTHENTICATION_BACKENDS = ["taskdeck.dashboard.lockout.LockoutModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Its Swagger UI and ReDoc assets, served from here instead of a CDN.
    "ninja",
    "django_celery_results",
    # Schedules edited in the admin when django-celery-beat is installed
    # (extra `beat`; it installs on Django < 6.1 only): see CELERY_BEAT_SCHEDULER.
    *(["django_celery_beat"] if find_spec("django_celery_beat") else []),
    "taskdeck",
    # The example apps: each one's tasks.py exercises part of the notes.
    "orders",
    "reports",
    "catalog",
    "notifications",
    "maintenance",
]
if django.VERSION < (6, 0) and find_spec("django_tasks"):
    # Django's Tasks framework, backported to 5.2 (taskdeck[tasks]); Django 6 has it built in.
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web server itself: no CDN, no separate file server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL in production (DATABASE_URL=postgres://...); SQLite in WAL mode
# under DATA_DIR on the embedded default, so workers and the web server can
# write at the same time.
# Connections are kept between requests and, in workers, between tasks
# (taskdeck's worker fix-up honours CONN_MAX_AGE as Django does): opening one
# per task was over half of a worker's time on PostgreSQL (docs/results.md).
DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "600")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
# Mail: SMTP for a deployment (DJANGO_SECRET_KEY set, as for HTTPS above;
# Django 6.1's `check --deploy` refuses the console backend there); a single
# machine's `taskdeck up` prints mail to its log. DJANGO_EMAIL_BACKEND decides.
_EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if os.environ.get("DJANGO_SECRET_KEY")
    else "django.core.mail.backends.console.EmailBackend"
)
# SMTP: the relay at DJANGO_EMAIL_HOST:DJANGO_EMAIL_PORT (localhost:25), with
# DJANGO_EMAIL_USER/DJANGO_EMAIL_PASSWORD and DJANGO_EMAIL_USE_TLS=1 if it asks.
_SMTP = {
    "host": os.environ.get("DJANGO_EMAIL_HOST", "localhost"),
    "port": int(os.environ.get("DJANGO_EMAIL_PORT", "25")),
    "username": os.environ.get("DJANGO_EMAIL_USER", ""),
    "password": os.environ.get("DJANGO_EMAIL_PASSWORD", ""),
    "use_tls": os.environ.get("DJANGO_EMAIL_USE_TLS") == "1",
}
if django.VERSION >= (6, 1):  # MAILERS replaces EMAIL_BACKEND (deprecated in 6.1)
    _smtp = _EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
    MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND, **({"OPTIONS": _SMTP} if _smtp else {})}}
else:
    EMAIL_BACKEND = _EMAIL_BACKEND
    EMAIL_HOST, EMAIL_PORT = _SMTP["host"], _SMTP["port"]
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _SMTP["username"], _SMTP["password"]
    EMAIL_USE_TLS = _SMTP["use_tls"]
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# Compressed copies made by `manage.py collectstatic`; without it (`taskdeck up`)
# the files are served from the apps' static folders.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Its own handler, not also Celery's root handler: each line once in worker logs.
    "loggers": {"taskdeck": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# --- Celery: the notes' "Configurations" ------------------------------------

# The notes' environment variables keep their names. Without CELERY_BROKER the
# project uses the embedded Redis that `taskdeck up` starts on a unix socket.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER") or f"redis+socket://{DATA_DIR / 'redis.sock'}"
# Results in the Django database (django-celery-results' tables), as the notes
# do. By default one record per task run (docs/results.md): the worker sends
# each run's result and monitor facts in one Redis write, AsyncResult reads it
# from Redis at once, and the recorder (`taskdeck monitor`, part of `taskdeck
# up`) writes the result rows, run rows and rollups in batches. On a broker
# that is not Redis (RabbitMQ) without TASKDECK_RESULTS_REDIS_URL, taskdeck's
# direct backend: one upsert per state. CELERY_BACKEND names another:
# taskdeck.results.backend:DatabaseBackend (direct), django-db (the stock one),
# taskdeck.results.writebehind:WriteBehindBackend (results through Redis, rows
# written by a flusher in the workers).
CELERY_RESULT_BACKEND = os.environ.get("CELERY_BACKEND") or default_result_backend(
    CELERY_BROKER_URL, os.environ.get("TASKDECK_RESULTS_REDIS_URL")
)
# Without it django-celery-results stores no task name, args, worker or traceback.
CELERY_RESULT_EXTENDED = True
# STARTED state and date_started are only recorded with this on.
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish that meets a broker restarting is retried for up to ~15 s (0, 0.5,
# 1, 1.5, then 2 s apart) before apply_async raises; Celery's default gives up
# after ~0.6 s. docs/reliability.md has the trade-off.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 10,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 2,
}
# JSON only: a pickled message could run code on the workers.
CELERY_ACCEPT_CONTENT = ["application/json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE

# Production defaults (docs/configuration.md says why each one):
# acknowledge after the task ran, so a worker killed mid-task does not lose it;
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# one reserved message per process, so a high task is not stuck behind
# low ones a process already holds;
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis: an unacknowledged message is redelivered after this many seconds.
    # It must exceed the longest task's run time (ETA/countdown included), or
    # a task still running is delivered a second time.
    "visibility_timeout": 3600,
    # Redis: a worker consuming several queues drains them in the order it
    # lists them (high lane first) instead of round-robin.
    "queue_order_strategy": "priority",
}

# --- Priority lanes and queues: the notes' "TASK PRIORITIZATION" --------------

# The notes' high_priority/medium_priority/low_priority queues. The lanes share
# one worker group (TASKDECK["WORKERS"] below), so on RabbitMQ they share one
# queue too ("lanes", declared with x-max-priority): a RabbitMQ worker takes from
# several queues in turn, and only in-queue priority puts a high task first.
# On Redis each lane keeps its queue (docs/lanes.md has the figures).
LANES = lanes_for(CELERY_BROKER_URL, NOTES_LANES)
LANE_QUEUES = list(dict.fromkeys(LANES.values()))
# Named explicitly: a task without a route goes here, not to "celery".
CELERY_TASK_DEFAULT_QUEUE = "default"
# Declared by hand as the notes prefer (new-style name: Celery ignores
# CELERY_QUEUES under the namespace), with priority support on each.
CELERY_TASK_QUEUES = declare_queues(
    CELERY_BROKER_URL, [CELERY_TASK_DEFAULT_QUEUE, *LANE_QUEUES, "notifications"]
)

# --- Routing: the notes' "TASK ROUTES" and "TASK DYNAMIC ROUTES" ------------

# Routers are asked in order and the first answer wins. NamespaceRouter answers
# only for "namespace:task" names, so the table after it still applies.
# In the table an exact name beats any pattern; patterns are tried in order.
CELERY_TASK_ROUTES = (
    "taskdeck.routing.NamespaceRouter",
    TaskRoutes(
        {
            "orders.tasks.charge_payment": {"lane": "high"},  # exact name
            "orders.tasks.*": {"lane": "medium"},  # glob; the exact name above still wins
            "reports.tasks.*": {"lane": "medium"},  # glob
            re.compile(r"maintenance\.tasks\."): {"lane": "low"},  # regex
        }
    ),
)

# --- Django's Tasks framework (django.tasks) on the same workers -------------

# `@task` functions run on the Celery workers above, routed like Celery tasks;
# their priority (-100..100) picks the lane (docs/django-tasks.md).
TASKS = {
    "default": {
        "BACKEND": "taskdeck.tasks.CeleryBackend",
        # The queue_name values a task may use; "default" leaves the queue to
        # the routes, or else to the lane of the task's priority.
        "QUEUES": [CELERY_TASK_DEFAULT_QUEUE, *LANE_QUEUES, "notifications"],
    }
}

# --- Monitoring: the events the recorder (`taskdeck monitor`) consumes -------

# Workers send task events without `-E`, and producers a task-sent event, so
# the recorder sees every run from publish to finish.
# TASKDECK_EVENTS=0 turns both off (bench/monitor_overhead.py compares the two).
# With the record backend the workers' task events are not needed (the records
# carry the same facts); heartbeats still go out, and producers still send task-sent.
_TASK_EVENTS = "1" if sends_task_events(CELERY_RESULT_BACKEND) else "0"
CELERY_WORKER_SEND_TASK_EVENTS = os.environ.get("TASKDECK_EVENTS", _TASK_EVENTS) == "1"
CELERY_TASK_SEND_SENT_EVENT = os.environ.get("TASKDECK_EVENTS", "1") == "1"

# django-celery-beat's scheduler when it is installed; else Celery's own, whose
# schedule file `taskdeck up` keeps in DATA_DIR (not the project folder).
if find_spec("django_celery_beat"):
    CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "purge-expired-sessions": {
        "task": "maintenance.tasks.purge_expired_sessions",
        "schedule": 3600.0,
    },
}

# --- taskdeck ----------------------------------------------------------------

TASKDECK = {
    "DATA_DIR": DATA_DIR,
    "DEFAULT_QUEUE": CELERY_TASK_DEFAULT_QUEUE,
    "LANES": LANES,
    # `taskdeck demo` sends this workload (core/demo.py).
    "DEMO": "core.demo.workload",
    # One worker per queue group, as the notes run them (`taskdeck up` starts
    # these; in production run the same `celery worker` commands anywhere).
    "WORKERS": {
        "lanes": {"queues": LANE_QUEUES, "concurrency": 2},
        "notifications": {"queues": ["notifications"], "concurrency": 1},
        "default": {"queues": [CELERY_TASK_DEFAULT_QUEUE], "concurrency": 1},
    },
}

# Monitoring (recorder, sampler, API, /metrics, alerts): defaults in
# taskdeck/conf.py MONITOR_DEFAULTS. API and /metrics tokens from the environment.
# Results through Redis (write-behind, records) on a broker that is not Redis.
if os.environ.get("TASKDECK_RESULTS_REDIS_URL"):
    TASKDECK["RESULTS"] = {"REDIS_URL": os.environ["TASKDECK_RESULTS_REDIS_URL"]}

TASKDECK["MONITOR"] = {
    "TOKENS": [t for t in os.environ.get("TASKDECK_API_TOKENS", "").split(",") if t],
}
