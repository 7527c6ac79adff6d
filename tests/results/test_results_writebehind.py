"""The write-behind backend with real workers, Redis and the PostgreSQL test database.

Results are readable from Redis at once and reach the table through the
flusher; a worker killed before its results were flushed loses none.
"""

from __future__ import annotations

import signal

import pytest
import redis
from celery.result import AsyncResult
from django_celery_results.models import TaskResult

from taskdeck.results import WRITE_BEHIND
from taskdeck.results.writebehind import WriteBehindBackend
from tests.results import checks
from tests.results.conftest import TASKS, run_checks
from tests.results.tasks import add
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ENV = {"CELERY_BACKEND": WRITE_BEHIND}
LOCK = "taskdeck:results:flush-lock"
PENDING = "taskdeck:results:pending"


def test_get_canvas_retries_and_started(start_worker, services_env):
    worker = start_worker(["default"], args=TASKS, env=ENV)
    run_checks({**services_env, **ENV}, worker.hostname)


def test_results_readable_before_the_flush_survive_a_killed_worker(start_worker, broker):
    from celery import current_app

    client = redis.Redis.from_url(broker)
    client.set(LOCK, "the test", ex=600)  # no flusher may write until the test says so
    worker = start_worker(["default"], args=TASKS, env=ENV)
    sent = [add.delay(i, i) for i in range(20)]
    backend = WriteBehindBackend(app=current_app)
    for i, result in enumerate(sent):
        assert AsyncResult(result.id, backend=backend).get(timeout=checks.TIMEOUT) == i + i
    ids = [result.id for result in sent]
    assert not TaskResult.objects.filter(task_id__in=ids).exists()
    assert client.llen(PENDING) >= 20

    worker.popen.send_signal(signal.SIGKILL)  # no shutdown, no last drain
    worker.popen.wait(60)
    client.delete(LOCK)
    start_worker(["default"], args=TASKS, env=ENV)  # its flusher finds the rows in Redis
    wait_for(
        lambda: TaskResult.objects.filter(task_id__in=ids, status="SUCCESS").count() == 20,
        120,
        "the killed worker's results in the table",
    )
    stored = TaskResult.objects.get(task_id=sent[3].id)
    assert (stored.task_name, stored.worker) == ("tests.results.tasks.add", worker.hostname)
    assert stored.result == "6" and stored.date_started is not None
    wait_for(lambda: client.llen(PENDING) == 0, 60, "the pending list to empty")
