"""Ablation rows for bench/results.py: the taskdeck stack with one part changed.

Each entry: name -> Variant (what it is, the databases it applies to, a
function that changes the settings namespace of core/settings.py, whether
rows land in the database). bench/variant_settings.py applies the one named
by ``BENCH_VARIANT``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

Settings = dict[str, Any]


def _stock_backend(s: Settings) -> None:
    s["CELERY_RESULT_BACKEND"] = "django-db"


def _close_per_task(s: Settings) -> None:
    s["TASKDECK"] = {**s["TASKDECK"], "WORKER_DB_CONNECTIONS": "close"}


def _celery_reuse_max(s: Settings) -> None:
    _close_per_task(s)
    s["CELERY_DB_REUSE_MAX"] = 1000


def _pool(s: Settings) -> None:
    db = s["DATABASES"]["default"]
    db["CONN_MAX_AGE"] = 0
    db.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 2}


def _health_checks(s: Settings) -> None:
    s["DATABASES"]["default"]["CONN_HEALTH_CHECKS"] = True


def _async_commit(s: Settings) -> None:
    s["DATABASES"]["default"].setdefault("OPTIONS", {})["options"] = "-c synchronous_commit=off"


def _no_started(s: Settings) -> None:
    s["CELERY_TASK_TRACK_STARTED"] = False


def _redis_backend(s: Settings) -> None:
    s["CELERY_RESULT_BACKEND"] = s["CELERY_BROKER_URL"]


def _ignore_results(s: Settings) -> None:
    s["CELERY_TASK_IGNORE_RESULT"] = True


def _started_at_once(s: Settings) -> None:
    s["TASKDECK"] = {**s["TASKDECK"], "RESULTS": {"STARTED_DELAY": 0}}


def _write_behind_no_flush(s: Settings) -> None:
    s["CELERY_RESULT_BACKEND"] = "taskdeck.results.writebehind:WriteBehindBackend"
    s["TASKDECK"] = {**s["TASKDECK"], "RESULTS": {"BATCH_SIZE": 1, "FLUSH_INTERVAL": 3600}}


class Variant(NamedTuple):
    description: str
    databases: tuple[str, ...]
    apply: Callable[[Settings], None]
    rows_in_database: bool = True


BOTH = ("postgresql", "sqlite")
PG = ("postgresql",)

VARIANTS: dict[str, Variant] = {
    "started-at-once": Variant(
        "taskdeck, every STARTED stored at once (STARTED_DELAY=0)", BOTH, _started_at_once
    ),
    "write-behind-no-flush": Variant(
        "write-behind, flusher idle (rows stay in Redis)", PG, _write_behind_no_flush, False
    ),
    "stock-backend": Variant("connections kept, django-db's get-then-write", BOTH, _stock_backend),
    "close-per-task": Variant("upsert, Celery's close after every task", BOTH, _close_per_task),
    "celery-reuse-max": Variant(
        "upsert, CELERY_DB_REUSE_MAX=1000 instead of taskdeck's policy", BOTH, _celery_reuse_max
    ),
    "pool": Variant("upsert, Django's psycopg pool instead of CONN_MAX_AGE", PG, _pool),
    "health-checks": Variant("taskdeck + CONN_HEALTH_CHECKS (a SELECT 1 per task)", PG, _health_checks),
    "async-commit": Variant("taskdeck + synchronous_commit=off", PG, _async_commit),
    "no-started": Variant("taskdeck without STARTED (track_started off)", BOTH, _no_started),
    "ignore-results": Variant("the Django project, results ignored", PG, _ignore_results, False),
    "redis-backend": Variant("Celery's Redis result backend, no database", PG, _redis_backend, False),
}
