"""A probe loaded into test workers: what each task saw when it started, kept in Redis.

Workers load it with ``celery worker --include tests.support.probe`` (``PROBE_ARGS``)
and find the Redis to write to in ``$TASKDECK_PROBE_REDIS`` (``Probe.env``). Its
``task_prerun`` handler RPUSHes one JSON record per task start: name, id, the
routing key and priority of the delivery as the worker received it
(``request.delivery_info``), and the worker's hostname. Since the list is
appended in start order, a worker of concurrency 1 gives the order its tasks
ran in — what the lane tests count with.

It also defines two test-only tasks (no route matches ``tests.support.probe.*``,
so they go where ``apply_async(queue=...)``, a lane or the default queue says):

- ``record(tag)`` does nothing; its start is the record;
- ``block(key)`` waits until the test calls :meth:`Probe.release` with ``key``,
  so a worker's only process is busy for exactly as long as a test needs.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

import redis
from celery import shared_task, signals

ENV = "TASKDECK_PROBE_REDIS"
STARTS = "taskdeck:probe:starts"
RELEASE = "taskdeck:probe:release:"
#: Extra ``celery worker`` arguments that load the probe.
PROBE_ARGS = ["--include", "tests.support.probe"]
#: Seconds ``block`` waits for its release before failing (a test that died).
BLOCK_TIMEOUT = 180


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _record_start(sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    url = os.environ.get(ENV)
    if not url or task is None:
        return  # not a probed worker (e.g. the test process itself)
    delivery = task.request.delivery_info or {}
    record = {
        "task": task.name,
        "id": task_id,
        "routing_key": delivery.get("routing_key"),
        "priority": delivery.get("priority"),
        "hostname": task.request.hostname,
    }
    _client(url).rpush(STARTS, json.dumps(record))


signals.task_prerun.connect(_record_start, weak=False, dispatch_uid="tests.support.probe")


@shared_task(name="tests.support.probe.record")
def record(tag: str = "") -> str:
    return tag


@shared_task(name="tests.support.probe.block")
def block(key: str) -> str:
    released = _client(os.environ[ENV]).blpop([RELEASE + key], timeout=BLOCK_TIMEOUT)
    if released is None:
        raise TimeoutError(f"probe.block({key!r}) was not released within {BLOCK_TIMEOUT}s")
    return key


class Probe:
    """The test's side: the records workers wrote, and the release of ``block`` tasks."""

    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.client = redis.Redis.from_url(redis_url)

    @property
    def env(self) -> dict[str, str]:
        """Environment a worker needs to write its records here."""
        return {ENV: self.url}

    def starts(self) -> list[dict[str, Any]]:
        """Every task start recorded so far, in start order."""
        return [json.loads(raw) for raw in self.client.lrange(STARTS, 0, -1)]

    def started(self, task_id: str) -> dict[str, Any] | None:
        """The start record of ``task_id``, if it started."""
        for start in self.starts():
            if start["id"] == task_id:
                return start
        return None

    def release(self, key: str) -> None:
        self.client.rpush(RELEASE + key, "go")

    def overtaken(
        self, block: Callable[[str], str], backlog: Callable[[], list[str]], urgent: Callable[[], str]
    ) -> tuple[int, dict[str, Any]]:
        """How many of a backlog started before an urgent task sent after it, and the urgent task's start.

        ``block(key)`` sends a ``block`` task (its id) that holds a worker's
        only process until released; while it runs, ``backlog()`` sends the
        backlog and ``urgent()`` the urgent task (their ids), so the whole
        backlog waits when the urgent task arrives. Counted from the start
        order, never timed.
        """
        from tests.support.services import wait_for

        earlier = len(self.starts())

        def started() -> list[str]:
            return [start["id"] for start in self.starts()[earlier:]]

        key = uuid.uuid4().hex
        blocker = block(key)
        try:
            wait_for(lambda: blocker in started(), 90, "the blocking task to start")
            lows = backlog()
            # The only process is busy and holds no other message: the whole backlog waits.
            assert started() == [blocker]
            high = urgent()
        finally:
            self.release(key)
        expected = {blocker, high, *lows}
        wait_for(lambda: set(started()) >= expected, 120, "the backlog to drain")
        order = started()
        assert sorted(order) == sorted(expected), "every task ran exactly once"
        return len(set(order[: order.index(high)]) & set(lows)), self.started(high) or {}
