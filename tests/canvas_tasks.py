"""Tasks of the canvas regression tests (tests/test_canvas.py), beside tests/results/tasks.py's.

Loaded with ``-I tests.canvas_tasks,tests.results.tasks``. No route matches
these names: they go to the default queue. Tasks that talk to the test use
the broker's Redis database (the test's own).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import current_app, shared_task


def _redis() -> redis.Redis:
    return redis.Redis.from_url(current_app.conf.broker_url)


@shared_task
def total(numbers: list[int]) -> int:
    return sum(numbers)


@shared_task
def echo(value: Any) -> Any:
    """The chord callback that shows the structure of its header's results."""
    return value


@shared_task
def append(key: str, value: int) -> int:
    """Push ``value`` onto the list ``key``: what the test reads to see which tasks ran."""
    _redis().rpush(key, value)
    return value
