"""LOST and STUCK runs, found by a real recorder, on real workers killed with SIGKILL.

- A worker killed (main process and pool) in the middle of a task: its run
  becomes LOST, with when the broker delivers the message again (Redis: the
  visibility timeout after the worker took it; RabbitMQ: at once, the
  channel closed with the process); once another worker runs the
  redelivered message the run is SUCCESS, and still says it was lost once.
- A message to a queue no worker consumes, and one that waits longer than
  ``STUCK_AFTER``, become STUCK; the second leaves STUCK when it is received.

The alert rules ``lost`` and ``stuck`` fire while runs are so, and
``/metrics`` counts them.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Callable

import pytest

from taskdeck.models import TaskRun
from taskdeck.models import Worker as WorkerRow
from taskdeck.monitor.alerts import breaches
from tests.faults.harness import Worker
from tests.faults.liveness_settings import STUCK_AFTER
from tests.faults.worker_settings import VISIBILITY_TIMEOUT
from tests.support.ledger import work
from tests.support.services import wait_for

LIVENESS = {"DJANGO_SETTINGS_MODULE": "tests.faults.liveness_settings"}
RECORDS = "taskdeck.results.record:RecordBackend"
DIRECT = "taskdeck.results.backend:DatabaseBackend"
#: The first delivery hangs this long (killed long before); a redelivered one runs at once.
HANG_MS = 300_000


def kill(worker: Worker) -> None:
    worker.kill_group(signal.SIGKILL)  # main process and pool at once: nothing acknowledged
    worker.popen.wait(30)


def lost_then_redelivered(task_id: str, doomed: Worker, start_heir: Callable[[], Worker]) -> TaskRun:
    run = TaskRun.objects.filter(task_id=task_id)
    wait_for(lambda: run.filter(state="STARTED", worker=doomed.hostname).exists(), 90, "the task to start")
    kill(doomed)
    lost = wait_for(lambda: run.filter(state="LOST").first(), 90, "the run to be LOST")
    assert (lost.worker, lost.lost_worker) == (doomed.hostname, doomed.hostname)
    assert lost.lost_at is not None and lost.redeliver_at is not None
    assert breaches({"name": "lost", "kind": "lost"}, dt.datetime.now(dt.UTC)) == {lost.queue: 1.0}

    heir = start_heir()
    done = wait_for(lambda: run.filter(state="SUCCESS").first(), 120, "the redelivered run to succeed")
    assert (done.worker, done.lost_worker, done.lost_at) == (heir.hostname, doomed.hostname, lost.lost_at)
    assert breaches({"name": "lost", "kind": "lost"}, dt.datetime.now(dt.UTC)) == {}
    return lost


@pytest.mark.parametrize("facts", ["events", "records"])
def test_redis_killed_worker_run_is_lost_then_succeeds_once_redelivered(
    facts, ledger, workers, recorders, staff_client
):
    """With task events, or with one record per run (no task events: no RECEIVED step)."""
    env = {**LIVENESS, "CELERY_BACKEND": RECORDS if facts == "records" else DIRECT}
    recorders(env=env)
    doomed = workers(env=env, concurrency=1, name="lost")
    task_id = work.apply_async((1,), {"first_ms": HANG_MS}).id

    lost = lost_then_redelivered(task_id, doomed, lambda: workers(env=env, concurrency=1, name="heir"))
    # Redis gives the message back the visibility timeout after the worker took it
    # (with records, known from when it started: a few milliseconds later).
    due = (lost.received_at or lost.started_at) + dt.timedelta(seconds=VISIBILITY_TIMEOUT)
    assert abs((lost.redeliver_at - due).total_seconds()) < 0.001
    (record,) = ledger.done()
    assert record["redelivered"] and record["host"].startswith("heir")

    detail = staff_client.get(f"/taskdeck/api/tasks/{task_id}").json()
    steps = [s["state"] for s in detail["timeline"]]
    received = ["RECEIVED"] if facts == "events" else []
    assert steps == ["SENT", *received, "STARTED", "LOST", "SUCCESS"], detail["timeline"]
    note = next(s["detail"] for s in detail["timeline"] if s["state"] == "LOST")
    assert doomed.hostname in note and "redelivered: success on heir" in note, note


@pytest.mark.rabbitmq
def test_rabbitmq_killed_worker_run_is_lost_then_succeeds_once_redelivered(
    ledger, workers, recorders, rabbitmq, rabbitmq_app
):
    env = {**LIVENESS, "CELERY_BROKER": rabbitmq}

    def start(name: str) -> Worker:
        worker = workers(env=env, concurrency=1, name=name, wait=False)
        wait_for(lambda: rabbitmq_app.control.ping([worker.hostname], timeout=0.5), 90, f"{name} to answer")
        return worker

    recorders(env=env)
    doomed = start("lost-amqp")
    task_id = rabbitmq_app.send_task(work.name, (1,), {"first_ms": HANG_MS}, queue="default").id

    lost = lost_then_redelivered(task_id, doomed, lambda: start("heir-amqp"))
    # RabbitMQ requeues at once when the channel closes: with the killed process.
    last = WorkerRow.objects.get(hostname=doomed.hostname).last_heartbeat
    assert abs((lost.redeliver_at - last).total_seconds()) < 0.001
    (record,) = ledger.done()
    assert record["redelivered"] and record["host"].startswith("heir")


def test_unconsumed_queue_and_long_wait_are_stuck(workers, recorders, client):
    # The busy task outlasts the fault settings' visibility timeout: Redis would hand it out again.
    env = {**LIVENESS, "TASKDECK_FAULTS_VISIBILITY_TIMEOUT": "120"}
    recorders(env=env)
    workers(env=env, concurrency=1, name="busy")
    orphan = work.apply_async((1,), queue="nobody").id
    # One process: the second task waits behind the first longer than STUCK_AFTER.
    work.apply_async((2,), {"ms": (STUCK_AFTER + 4) * 1000})
    waiting = work.apply_async((3,)).id
    runs = TaskRun.objects

    stuck = wait_for(lambda: runs.filter(task_id=orphan, state="STUCK").first(), 60, "the orphan STUCK")
    assert stuck.stuck_reason == "no online worker consumes queue nobody"
    late = wait_for(lambda: runs.filter(task_id=waiting, state="STUCK").first(), 60, "the late run STUCK")
    assert late.stuck_reason == f"not received {STUCK_AFTER} s after it was sent"
    now = dt.datetime.now(dt.UTC)
    assert breaches({"name": "stuck", "kind": "stuck"}, now) == {"nobody": 1.0, "default": 1.0}
    metrics = client.get("/metrics").content.decode()
    assert 'taskdeck_runs_unhealthy{queue="nobody",state="STUCK"} 1.0' in metrics, metrics

    done = wait_for(lambda: runs.filter(task_id=waiting, state="SUCCESS").first(), 90, "the late run to run")
    assert done.stuck_at == late.stuck_at and done.stuck_reason == late.stuck_reason
    assert runs.get(task_id=orphan).state == "STUCK"
