"""Priority that holds under load: taskdeck's defaults on a shared, busy worker.

One worker of concurrency 2 consumes every lane queue of the project (on
Redis the notes' three queues; on RabbitMQ the one queue the lanes share,
``taskdeck.lanes.lanes_for``). A backlog of low tasks of 100 ms keeps both
processes busy; then a burst of high tasks is sent. The probe records every
task start in order, so for each high task the test counts the low tasks
that started after it was sent and before it started: counted in tasks,
never timed (bench/priority.py measures the times).

- With the project's settings (prefetch 1, late acks, lane priority, Redis
  ``queue_order_strategy: "priority"``) each process holds only the task it
  runs, so the only low tasks that can start ahead of a high one are those
  already on their way to a process when it was sent: at most one per process.
- With Celery's own worker defaults put back (tests/support/celery_defaults.py:
  four messages reserved per process, acknowledged on receipt) the same queues
  and priorities are not enough: each high task waits behind the low tasks
  the worker had already reserved, about prefetch x concurrency of them. That
  case shows the test can see the problem it guards against.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from celery import current_app
from django.conf import settings
from django.test import override_settings

from taskdeck.lanes import declare_queues, in_lane, lanes_for
from tests.support.probe import PROBE_ARGS, STARTS, Probe
from tests.support.rabbitmq import celery_app as rabbitmq_celery_app
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENCY = 2
CELERY_PREFETCH = 4  # Celery's default worker_prefetch_multiplier
BACKLOG = 60
LOW_SECONDS = 0.1
HIGHS = 10
LOW = "maintenance.tasks.rebuild_search_index"
RECORD = "tests.support.probe.record"
# Worker settings per case: the project's, or Celery's worker defaults put back.
WORKER_SETTINGS = {"taskdeck": {}, "celery": {"DJANGO_SETTINGS_MODULE": "tests.support.celery_defaults"}}


def lane_queues(broker_url: str) -> list[str]:
    """The queues the project's lanes use on this broker (what its shared worker group consumes)."""
    return list(dict.fromkeys(lanes_for(broker_url).values()))


def lows_ahead(app: Any, probe: Probe) -> list[int]:
    """Low tasks started after each high task of a burst was sent and before it started."""
    lows = {
        in_lane(app.signature(LOW, args=(i,), kwargs={"seconds": LOW_SECONDS}), "low").apply_async().id
        for i in range(BACKLOG)
    }
    # Both processes busy and, with Celery's prefetch, the reserve filled.
    wait_for(lambda: probe.client.llen(STARTS) >= 2 * CONCURRENCY, 90, "the backlog to start")
    sent = []  # (high task id, starts recorded when it had been sent)
    for i in range(HIGHS):
        high = in_lane(app.signature(RECORD, args=(f"high-{i}",)), "high").apply_async()
        sent.append((high.id, probe.client.llen(STARTS)))
    wait_for(lambda: all(probe.started(task_id) for task_id, _ in sent), 90, "the high tasks to start")
    order = [start["id"] for start in probe.starts()]
    return [sum(task_id in lows for task_id in order[mark : order.index(high)]) for high, mark in sent]


def check(case: str, ahead: list[int]) -> None:
    if case == "taskdeck":
        assert max(ahead) <= CONCURRENCY, (
            f"low tasks started ahead of each high task: {ahead}; at most {CONCURRENCY} "
            "(one on its way to each process) with taskdeck's defaults"
        )
    else:
        # Reserved ahead: about CELERY_PREFETCH x CONCURRENCY; far more than the bound above.
        assert statistics.median(ahead) > 2 * CONCURRENCY, (
            f"low tasks started ahead of each high task: {ahead}; Celery's defaults should "
            f"let about {CELERY_PREFETCH * CONCURRENCY} through"
        )


@pytest.mark.parametrize("case", ["taskdeck", "celery"])
def test_redis_high_tasks_overtake_a_busy_backlog_on_a_shared_worker(case, broker, start_worker, probe):
    start_worker(
        lane_queues(broker), CONCURRENCY, args=PROBE_ARGS, env={**probe.env, **WORKER_SETTINGS[case]}
    )
    check(case, lows_ahead(current_app._get_current_object(), probe))


@pytest.mark.rabbitmq
@pytest.mark.parametrize("case", ["taskdeck", "celery"])
def test_rabbitmq_high_tasks_overtake_a_busy_backlog_on_a_shared_worker(
    case, rabbitmq, start_amqp_worker, probe
):
    start_amqp_worker(
        lane_queues(rabbitmq), CONCURRENCY, args=PROBE_ARGS, env={**probe.env, **WORKER_SETTINGS[case]}
    )
    # This process's settings were made for the tests' Redis: publish as the
    # project's settings would on RabbitMQ, the lanes in their shared queue.
    lanes = lanes_for(rabbitmq)
    queues = declare_queues(rabbitmq, [settings.CELERY_TASK_DEFAULT_QUEUE, *lane_queues(rabbitmq)])
    with override_settings(TASKDECK={**settings.TASKDECK, "LANES": lanes}, CELERY_TASK_QUEUES=queues):
        app = rabbitmq_celery_app(rabbitmq)
        try:
            check(case, lows_ahead(app, probe))
        finally:
            app.close()
