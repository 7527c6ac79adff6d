"""Django tasks (``django.tasks``, or the backport on Django 5.2) for the tests of taskdeck.tasks.

Workers load them with ``--include tests.support.dtasks`` (``DTASK_ARGS``,
which loads the probe too). No route matches ``tests.support.dtasks.*``, so
the lane of a task's priority decides its queue. ``wait`` holds a worker
process until the test releases it, through the probe's Redis
(tests/support/probe.py).
"""

from __future__ import annotations

import os

from tests.support.probe import ENV, PROBE_ARGS, RELEASE, _client

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task

#: Extra ``celery worker`` arguments that load these tasks and the probe.
DTASK_ARGS = [*PROBE_ARGS, "--include", "tests.support.dtasks"]
WAIT_TIMEOUT = 180


@task
def record(tag: str = "") -> str:
    return tag


@task
def add(a: int, b: int, *, scale: int = 1) -> dict:
    return {"sum": (a + b) * scale, "pair": [a, b]}


@task
async def add_async(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise LookupError(message)


@task
def wait(key: str) -> str:
    """Runs until the test releases ``key`` (a RUNNING task for as long as the test needs)."""
    released = _client(os.environ[ENV]).blpop([RELEASE + key], timeout=WAIT_TIMEOUT)
    if released is None:
        raise TimeoutError(f"dtasks.wait({key!r}) was not released within {WAIT_TIMEOUT}s")
    return key


@task(takes_context=True)
def contextual(context, tag: str) -> dict:
    return {"result_id": context.task_result.id, "attempt": context.attempt, "tag": tag}


@task(queue_name="notifications")
def notify(tag: str) -> str:
    return tag
