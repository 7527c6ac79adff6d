"""What a user of the result backend relies on, checked against a running worker.

Each check publishes real tasks and asserts on ``AsyncResult`` and on the
``TaskResult`` rows, through the Celery app and the database of the process it
runs in: the test process itself (PostgreSQL), or a client process on another
database (SQLite)::

    python -m tests.results.checks WORKER_HOSTNAME [CHECK ...]

runs the named checks (all by default) and exits non-zero on the first failure.
"""

from __future__ import annotations

import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

TIMEOUT = 120  # seconds: two shared cores, other suites running beside us


def row(task_id: str, status: str) -> Any:
    """The task's ``TaskResult`` row once it has ``status`` (write-behind writes it a moment later)."""
    from django_celery_results.models import TaskResult

    return poll(
        lambda: TaskResult.objects.filter(task_id=task_id, status=status).first(),
        f"the {status} row of task {task_id}",
    )


def poll(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def get_success_and_failure(worker: str) -> None:
    from tests.results.tasks import add, fail

    assert add.delay(2, 3).get(timeout=TIMEOUT) == 5
    failed = fail.delay("boom")
    try:
        failed.get(timeout=TIMEOUT)
    except ValueError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("get() of a failed task did not raise")
    assert failed.state == "FAILURE"
    assert "ValueError: boom" in row(failed.id, "FAILURE").traceback


def extended_fields(worker: str) -> None:
    from tests.results.tasks import add

    result = add.delay(4, 5)
    assert result.get(timeout=TIMEOUT) == 9
    stored = row(result.id, "SUCCESS")
    assert stored.task_name == "tests.results.tasks.add"
    assert "(4, 5)" in stored.task_args
    assert stored.worker == worker
    assert stored.date_started is not None and stored.date_done is not None
    assert stored.date_created <= stored.date_started <= stored.date_done
    assert result.queue == "default"  # kept in meta: django-celery-results has no column for it


def started_while_running(worker: str) -> None:
    import redis
    from celery import current_app

    from tests.results.tasks import wait_for_key

    key = f"release:{uuid.uuid4().hex}"
    result = wait_for_key.delay(key)
    poll(lambda: result.state == "STARTED", "the running task's STARTED state")
    running = row(result.id, "STARTED")
    assert running.date_started is not None
    assert running.worker == worker and running.task_name == "tests.results.tasks.wait_for_key"
    redis.Redis.from_url(current_app.conf.broker_url).set(key, 1, ex=600)
    assert result.get(timeout=TIMEOUT) == "released"
    done = row(result.id, "SUCCESS")
    assert done.date_started == running.date_started  # the upsert keeps it
    assert done.date_done >= done.date_started


def retries(worker: str) -> None:
    from tests.results.tasks import flaky

    result = flaky.delay(2)
    assert result.get(timeout=TIMEOUT) == 2
    assert result.retries == 2  # kept in meta
    assert row(result.id, "SUCCESS").task_name == "tests.results.tasks.flaky"


def group_join(worker: str) -> None:
    from celery import group

    from tests.results.tasks import add

    result = group(add.s(i, i) for i in range(8)).apply_async()
    assert result.get(timeout=TIMEOUT) == [i + i for i in range(8)]
    assert all(r.state == "SUCCESS" for r in result.results)
    # The group and parent ids are in the meta read back, as on Celery's own backends.
    assert {r.backend.get_task_meta(r.id).get("group_id") for r in result.results} == {result.id}
    chained = (add.s(1, 1) | add.s(2)).apply_async()
    assert chained.get(timeout=TIMEOUT) == 4
    assert chained.backend.get_task_meta(chained.id).get("parent_id") == chained.parent.id


def chord_once(worker: str) -> None:
    import redis
    from celery import chord, current_app, group
    from django_celery_results.models import ChordCounter

    from tests.results.tasks import add, collect

    key = f"chord-calls:{uuid.uuid4().hex}"
    result = chord((add.s(i, 1) for i in range(6)), collect.s(key)).apply_async()
    assert result.get(timeout=TIMEOUT) == [i + 1 for i in range(6)]
    group_id = result.parent.id
    assert not ChordCounter.objects.filter(group_id=group_id).exists()  # used up, deleted
    # Anything the worker still had in hand is done once a later group is.
    group(add.s(0, 0) for _ in range(4)).apply_async().get(timeout=TIMEOUT)
    assert int(redis.Redis.from_url(current_app.conf.broker_url).get(key) or 0) == 1


def unknown_task_is_named(worker: str) -> None:
    from celery import current_app

    result = current_app.send_task("tests.results.no_such_task", queue="default")
    try:
        result.get(timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - NotRegistered, rebuilt from the stored result
        assert "no_such_task" in str(exc)
    else:
        raise AssertionError("get() of an unknown task did not raise")
    # Stored by the worker's main process, named by taskdeck.signals.
    poll(lambda: row(result.id, "FAILURE").task_name == "tests.results.no_such_task", "the task's name")


CHECKS: dict[str, Callable[[str], None]] = {
    check.__name__: check
    for check in (
        get_success_and_failure,
        extended_fields,
        started_while_running,
        retries,
        group_join,
        chord_once,
        unknown_task_is_named,
    )
}


def main(argv: list[str]) -> int:
    import django

    django.setup()
    from core.celery_app import app

    app.set_current()
    worker, *names = argv
    for name in names or list(CHECKS):
        try:
            CHECKS[name](worker)
        except Exception:  # noqa: BLE001 - reported to the test through the exit status
            print(f"FAILED {name}", flush=True)
            traceback.print_exc()
            return 1
        print(f"ok {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
