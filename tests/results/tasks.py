"""Tasks of the result tests, loaded by their workers with ``-I tests.results.tasks``.

No route matches these names: they go to the default queue.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import current_app, shared_task


def _redis() -> redis.Redis:
    return redis.Redis.from_url(current_app.conf.broker_url)


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def fail(message: str) -> None:
    raise ValueError(message)


@shared_task
def wait_for_key(key: str, timeout: float = 120) -> str:
    """Run until the test sets ``key`` in Redis: a task the test can watch while it runs."""
    deadline = time.monotonic() + timeout
    client = _redis()
    while not client.get(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was never set")
        time.sleep(0.05)
    return "released"


@shared_task(bind=True, max_retries=5)
def flaky(self: Any, failures: int) -> int:
    """Fails (and is retried at once) ``failures`` times, then returns its retry count."""
    if self.request.retries < failures:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries + 1} fails"), countdown=0)
    return int(self.request.retries)


@shared_task
def collect(values: list[int], key: str) -> list[int]:
    """Chord callback: counts its calls in Redis under ``key``."""
    _redis().incr(key)
    return sorted(values)


@shared_task
def whoami() -> dict[str, Any]:
    """The worker process and the database session its tasks (and their results) use."""
    from django.db import connection

    backend = None
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
    return {"pid": os.getpid(), "backend": backend}


@shared_task(bind=True)
def own_meta(self: Any, meta: dict[str, Any]) -> str:
    """Stores ``meta`` as its own ``request.meta`` (django-celery-results keeps it in ``TaskResult.meta``)."""
    self.request.meta = meta
    return "done"
