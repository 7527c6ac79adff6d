"""The recorder killed and restarted: history reconciled, nothing missing.

With task events (the direct backend's; the record backend's case is in
tests/faults/test_records.py). On Redis, events are not queued for a recorder that is not running (they
are published to whoever listens), so the runs that finished while it was
down reach the history through reconciliation from django-celery-results'
rows at start-up. What the test counts: the runs the API lists, the runs
``/metrics`` counts, and how many of them were rebuilt from result rows.

On RabbitMQ the recorder's event queue is durable and its own (by recorder
name): the events sent while it was down wait there, and the restarted
recorder reads them, received and started times included.
"""

from __future__ import annotations

import re
import signal

import pytest
from celery import current_app

from taskdeck.models import RecorderState, TaskRun
from taskdeck.results import BACKEND
from tests.faults.harness import Worker, report, settle
from tests.support.ledger import work
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 400
KILL_AT = 100
RESTART_AT = 220
AFTER = 100
TOTAL = r'taskdeck_tasks_total\{name="tests.support.ledger.work",queue="([^"]*)",state="([^"]*)"\} (\S+)'


def listed(client) -> dict[str, str]:
    """Every ledger run the JSON API lists, id -> state, through its keyset pagination."""
    runs: dict[str, str] = {}
    after = None
    while True:
        params = {"name": "tests.support.ledger.work", "limit": 500, **({"after": after} if after else {})}
        page = client.get("/taskdeck/api/tasks", params).json()
        runs.update({item["task_id"]: item["state"] for item in page["items"]})
        after = page["next"]
        if after is None:
            return runs


def test_recorder_killed_mid_run_and_restarted_misses_no_run(ledger, workers, recorders, staff_client):
    workers(concurrency=2, env={"CELERY_BACKEND": BACKEND})
    first = recorders()
    with current_app.producer_or_acquire() as producer:
        ids = [work.apply_async((i, 5), producer=producer).id for i in range(TASKS)]
    wait_for(lambda: ledger.done_count() >= KILL_AT, 120, f"{KILL_AT} tasks done")
    first.kill_group(signal.SIGKILL)  # mid-batch: what it had not written yet is gone with it
    first.popen.wait(30)
    recorded_at_kill = TaskRun.objects.filter(task_id__in=ids, state="SUCCESS").count()
    wait_for(lambda: ledger.done_count() >= RESTART_AT, 120, f"{RESTART_AT} tasks done while it was down")
    done_while_down = ledger.done_count() - recorded_at_kill

    recorders()
    # Sent once the new recorder listens: these reach the history through their events.
    with current_app.producer_or_acquire() as producer:
        later = [work.apply_async((i, 5), producer=producer).id for i in range(TASKS, TASKS + AFTER)]
    ids += later
    wait_for(lambda: ledger.tally(ids)["lost"] == 0, 180, "every task done")
    wait_for(
        lambda: TaskRun.objects.filter(task_id__in=ids, state="SUCCESS").count() == len(ids),
        120,
        "every run in the history",
    )
    api = listed(staff_client)

    def counted() -> float:
        metrics = staff_client.get("/metrics").content.decode()
        return sum(float(n) for _, state, n in re.findall(TOTAL, metrics) if state == "SUCCESS")

    # The totals are written just after the runs, by the same batch: give the last one a moment.
    settle(lambda: counted() >= len(ids), 30)
    total = counted()
    reconstructed = TaskRun.objects.filter(task_id__in=ids, reconstructed=True).count()
    counts = {
        "sent": len(ids),
        "history_success": TaskRun.objects.filter(task_id__in=ids, state="SUCCESS").count(),
        "api_listed": len(set(api) & set(ids)),
        "api_states": sorted(set(api.values())),
        "metrics_success_total": total,
        "recorded_when_killed": recorded_at_kill,
        "done_while_down_approx": done_while_down,
        "reconstructed_from_results": reconstructed,
        "recorder_reconciled_counter": RecorderState.objects.get(name="default").reconciled,
        "sent_after_restart": AFTER,
        "after_restart_from_events": TaskRun.objects.filter(task_id__in=later, reconstructed=False).count(),
        "missing": len(set(ids) - set(api)),
    }
    report("recorder-restart", counts)

    assert counts["missing"] == 0 and counts["api_listed"] == len(ids)
    assert counts["api_states"] == ["SUCCESS"]
    assert total == len(ids), "each run counted once in /metrics, rebuilt ones included"
    assert counts["after_restart_from_events"] == AFTER
    # Runs did finish unseen, and reconciliation is what brought them back.
    assert reconstructed >= 1


@pytest.mark.rabbitmq
def test_rabbitmq_recorder_restarted_reads_the_events_sent_while_it_was_down(
    ledger, workers, recorders, rabbitmq, rabbitmq_app
):
    env = {"CELERY_BROKER": rabbitmq}
    first = recorders(env=env)
    worker: Worker = workers(env=env, concurrency=2, wait=False)
    wait_for(lambda: rabbitmq_app.control.ping([worker.hostname], timeout=0.5), 90, "the worker to answer")
    probe = rabbitmq_app.send_task(work.name, (0,), queue="default").id
    recorded = TaskRun.objects.filter(task_id=probe, state="SUCCESS")
    wait_for(recorded.exists, 90, "the recorder to listen")

    first.kill_group(signal.SIGKILL)
    first.popen.wait(30)
    ids = [rabbitmq_app.send_task(work.name, (i,), queue="default").id for i in range(1, AFTER + 1)]
    wait_for(lambda: ledger.tally(ids)["lost"] == 0, 120, "every task done while the recorder was down")

    recorders(env=env)
    runs = TaskRun.objects.filter(task_id__in=ids)
    wait_for(lambda: runs.filter(state="SUCCESS").count() == len(ids), 120, "every run in the history")
    # From the events that waited, not rebuilt from result rows: each step of each run is there.
    wait_for(
        lambda: (
            runs.filter(reconstructed=False).exclude(received_at=None).exclude(started_at=None).count()
            == len(ids)
        ),
        60,
        "every run's received and started times",
    )
    assert runs.exclude(sent_at=None).count() == len(ids)
