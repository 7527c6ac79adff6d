"""Loaded into the priority bench's workers (``celery worker -I bench.starts``): when each task started.

A ``task_prerun`` handler RPUSHes ``"<task id> <time.time()>"`` to the Redis
list ``bench:starts`` at ``$BENCH_STARTS_REDIS``. The list is appended in start
order, by every worker process on the machine against one clock, so the bench
can count which tasks started between a high task's publish and its start.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import redis
from celery import signals

ENV = "BENCH_STARTS_REDIS"
KEY = "bench:starts"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _record(task_id: str | None = None, **kwargs: Any) -> None:
    url = os.environ.get(ENV)
    if url and task_id:
        _client(url).rpush(KEY, f"{task_id} {time.time():.6f}")


signals.task_prerun.connect(_record, weak=False, dispatch_uid="bench.starts")


def read(url: str) -> list[tuple[str, float]]:
    """Every start recorded so far, in start order: (task id, time)."""
    out = []
    for raw in redis.Redis.from_url(url).lrange(KEY, 0, -1):
        task_id, at = raw.decode().split()
        out.append((task_id, float(at)))
    return out
