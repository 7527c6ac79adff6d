"""One record per task run, with real workers, Redis, a recorder and the PostgreSQL test database.

The worker writes each run's record (result key + stream entry) once; the
recorder writes the ``TaskResult`` rows, the ``TaskRun`` rows and the rollups
from the stream. Results are readable at once; nothing is lost when the
worker or the recorder is killed.
"""

from __future__ import annotations

import datetime as dt
import json
import signal

import pytest
import redis
from celery.result import AsyncResult
from django.utils import timezone
from django_celery_results.models import TaskResult

from taskdeck.models import TaskRollup, TaskRun
from taskdeck.results import RECORD
from taskdeck.results.record import RecordBackend
from tests.results import checks
from tests.results.conftest import TASKS, run_checks
from tests.results.tasks import add, fail
from tests.support.services import trickled_batches, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ENV = {"CELERY_BACKEND": RECORD}
STREAM = "taskdeck:results:records"


def test_get_canvas_retries_and_started(start_worker, start_recorder, services_env):
    start_recorder(env=ENV)
    worker = start_worker(["default"], args=TASKS, env=ENV)
    run_checks({**services_env, **ENV}, worker.hostname)


def test_runs_and_rollups_come_from_the_records_alone(start_worker, start_recorder, broker):
    from celery import current_app

    worker = start_worker(["default"], args=TASKS, env={**ENV, "TASKDECK_EVENTS": "0"})
    ok = [add.delay(i, 1) for i in range(5)]
    bad = fail.delay("boom")
    backend = RecordBackend(app=current_app)
    assert [AsyncResult(r.id, backend=backend).get(timeout=checks.TIMEOUT) for r in ok] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        AsyncResult(bad.id, backend=backend).get(timeout=checks.TIMEOUT)
    # Not written before a recorder reads the stream: the records wait there.
    assert not TaskRun.objects.exists() and not TaskResult.objects.exists()
    assert redis.Redis.from_url(broker).xlen(STREAM) >= 6

    start_recorder(env={**ENV, "TASKDECK_EVENTS": "0"})
    ids = [r.id for r in ok]
    wait_for(lambda: TaskRun.objects.filter(state="SUCCESS").count() == 5, 60, "the runs")
    wait_for(lambda: TaskResult.objects.filter(task_id__in=ids).count() == 5, 60, "the result rows")
    run = TaskRun.objects.get(task_id=ok[2].id)
    assert (run.name, run.queue, run.worker, run.result) == (
        "tests.results.tasks.add",
        "default",
        worker.hostname,
        "3",
    )
    assert run.args == "(2, 1)" and not run.reconstructed
    assert run.sent_at is not None and run.started_at is not None and run.wait_time is not None
    assert run.runtime is not None
    wait_for(lambda: TaskRun.objects.filter(task_id=bad.id, state="FAILURE").exists(), 60, "the failed run")
    failed = TaskRun.objects.get(task_id=bad.id)
    assert failed.exception == "ValueError('boom')" and "ValueError: boom" in failed.traceback
    minute = TaskRollup.objects.filter(name="tests.results.tasks.add")
    assert sum(r.succeeded for r in minute) == 5
    wait_for(lambda: redis.Redis.from_url(broker).xlen(STREAM) == 0, 60, "the stream to be emptied")


def test_a_killed_worker_and_a_killed_recorder_lose_nothing(start_worker, start_recorder, broker):
    from celery import current_app

    client = redis.Redis.from_url(broker)
    worker = start_worker(["default"], args=TASKS, env=ENV)
    sent = [add.delay(i, i) for i in range(30)]
    backend = RecordBackend(app=current_app)
    got = [AsyncResult(r.id, backend=backend).get(timeout=checks.TIMEOUT) for r in sent]
    assert got == [i + i for i in range(30)]
    worker.popen.send_signal(signal.SIGKILL)  # no shutdown: the records are in Redis already
    worker.popen.wait(60)

    recorder = start_recorder(env=ENV)
    recorder.popen.send_signal(signal.SIGKILL)  # maybe mid-batch: read, not acknowledged
    recorder.popen.wait(60)
    start_recorder(env=ENV)  # the same consumer name: reads what it left pending first
    ids = [r.id for r in sent]
    wait_for(
        lambda: TaskResult.objects.filter(task_id__in=ids, status="SUCCESS").count() == 30,
        120,
        "the killed worker's results in the table",
    )
    wait_for(lambda: TaskRun.objects.filter(task_id__in=ids, state="SUCCESS").count() == 30, 120, "the runs")
    assert sum(r.succeeded for r in TaskRollup.objects.filter(name="tests.results.tasks.add")) == 30
    wait_for(lambda: client.xlen(STREAM) == 0, 60, "the stream to be emptied")


def test_a_worker_says_when_its_records_wait_for_a_recorder(start_worker, start_recorder):
    """No recorder: the worker's log says the results wait in Redis; a recorder started: it says so again."""
    env = {**ENV, "DJANGO_SETTINGS_MODULE": "tests.support.recorder_watch_settings"}
    worker = start_worker(["default"], args=TASKS, env=env)
    assert add.delay(1, 2).get(timeout=checks.TIMEOUT) == 3
    said = "no recorder has read the task records"
    wait_for(lambda: said in worker.output(), 30, f"the worker's warning in {worker.log}")
    warning = next(line for line in worker.output().splitlines() if said in line)
    assert "(1 waiting in Redis, taskdeck:results:records)" in warning and "taskdeck monitor" in warning
    assert "reads the task records again" not in worker.output()

    start_recorder(env=env)
    wait_for(lambda: TaskResult.objects.filter(status="SUCCESS").exists(), 60, "the result row")
    wait_for(lambda: "reads the task records again" in worker.output(), 30, f"the all-clear in {worker.log}")
    assert worker.output().count(said) == 1  # said once, not at every look


@pytest.mark.parametrize("final", ["FAILURE", "REVOKED", "SUCCESS"])
@pytest.mark.parametrize("backend_class", ["write-behind", "record"])
def test_a_retry_stored_after_the_next_attempt_ended_is_ignored_in_redis(broker, final, backend_class):
    """The Redis copy follows the upsert's rule: Celery stores a RETRY after sending the next attempt."""
    import uuid

    from celery import current_app

    from taskdeck.results.writebehind import WriteBehindBackend

    backend = (WriteBehindBackend if backend_class == "write-behind" else RecordBackend)(app=current_app)
    task_id = str(uuid.uuid4())

    def ship(status: str) -> str:
        backend.ship({"task_id": task_id, "status": status, "result": "null", "content_encoding": "utf-8"})
        stored = backend.stored_row(task_id)
        assert stored is not None
        return str(stored["status"])

    assert ship(final) == final
    assert ship("RETRY") == final
    assert ship("STARTED") == ("SUCCESS" if final == "SUCCESS" else "STARTED")  # run again under its id
    if backend_class == "record":  # each state's record goes to the recorder all the same
        entries = redis.Redis.from_url(broker).xrange(STREAM)
        assert [json.loads(fields[b"r"])["status"] for _, fields in entries] == [final, "RETRY", "STARTED"]


def test_an_attempt_that_ends_after_the_next_one_keeps_its_place(broker, start_recorder):
    """Celery sends a retry's next attempt before it stores the RETRY: under load the next attempt
    (another process) can end first. The late RETRY changes no state, in Redis or in the tables,
    and its attempt is shown all the same: three attempts, the first two retried."""
    import uuid

    from celery import current_app
    from celery.app.task import Context

    from taskdeck.monitor.attempts import attempts

    backend = RecordBackend(app=current_app)
    task_id = str(uuid.uuid4())

    t0 = timezone.now()

    def end(retries: int, state: str, started: float, done: float) -> None:
        """Attempt ``retries + 1``, started and ended ``started`` and ``done`` seconds after t0."""
        request = Context(
            id=task_id,
            task="tests.results.tasks.add",
            args=[1, 2],
            kwargs={},
            hostname="w@h",
            retries=retries,
            delivery_info={"routing_key": "default"},
        )
        result = backend.encode_result(
            3 if state == "SUCCESS" else ValueError(f"attempt {retries + 1}"), state
        )
        at, began = t0 + dt.timedelta(seconds=done), t0 + dt.timedelta(seconds=started)
        backend.ship(backend._row(task_id, result, state, None, request, at, began))

    end(0, "RETRY", 0.0, 0.1)
    end(2, "SUCCESS", 0.3, 0.4)  # attempt 3, sent by attempt 2 before it stored its RETRY
    end(1, "RETRY", 0.2, 0.25)  # stored last
    assert backend.stored_row(task_id)["status"] == "SUCCESS"
    start_recorder(env=ENV)
    wait_for(lambda: TaskResult.objects.filter(task_id=task_id).exists(), 60, "the result row")
    wait_for(lambda: redis.Redis.from_url(broker).xlen(STREAM) == 0, 60, "every record written")
    assert TaskResult.objects.get(task_id=task_id).status == "SUCCESS"
    run = TaskRun.objects.get(task_id=task_id)
    shown = [(a["number"], a["state"]) for a in attempts(run.attempts)]
    assert (run.state, run.retries, shown) == ("SUCCESS", 2, [(1, "RETRY"), (2, "RETRY"), (3, "SUCCESS")]), (
        run.attempts
    )
    assert sum(r.retried for r in TaskRollup.objects.filter(name="tests.results.tasks.add")) == 2


def test_records_that_trickle_in_are_written_together(broker, start_recorder):
    """A recorder that finds a few records waits for more (``MONITOR["RECORD_LINGER"]``, 0.5 s)
    before it writes them: ten records sent 30 ms apart go in one or two batches, not ten
    (each batch stamps its runs' ``updated_at`` once)."""
    import uuid

    from celery import current_app
    from celery.app.task import Context

    backend = RecordBackend(app=current_app)

    def ship() -> str:
        task_id = str(uuid.uuid4())
        request = Context(id=task_id, task="tests.results.tasks.add", args=[1, 2], kwargs={}, hostname="w@h")
        backend.store_result(task_id, 3, "SUCCESS", request=request)
        return task_id

    start_recorder(env=ENV)
    batches = trickled_batches(ship)
    assert len(batches) <= 3, sorted(batches)
