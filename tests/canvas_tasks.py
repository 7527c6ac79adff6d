"""Tasks of the canvas regression tests (tests/test_canvas.py), loaded with ``-I tests.canvas_tasks``.

No route matches these names: they go to the default queue. Tasks that talk
to the test use the broker's Redis database (the test's own).
"""

from __future__ import annotations

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
def total(numbers: list[int]) -> int:
    return sum(numbers)


@shared_task
def echo(value: Any) -> Any:
    """The chord callback that shows the structure of its header's results."""
    return value


@shared_task
def fail(message: str = "expected failure") -> None:
    raise ValueError(message)


@shared_task
def block(key: str, timeout: float = 120) -> str:
    """Run until the test sets ``key``: a header task that is still running while the test looks."""
    deadline = time.monotonic() + timeout
    client = _redis()
    while not client.get(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was never set")
        time.sleep(0.05)
    return "released"


@shared_task
def append(key: str, value: int) -> int:
    """Push ``value`` onto the list ``key``: what the test reads to see which tasks ran."""
    _redis().rpush(key, value)
    return value
