"""Priority lanes on a shared worker: a high task overtakes a backlog of low ones.

One worker consumes every lane with one process (prefetch 1, late
acks: the project's settings). The probe's ``block`` task keeps that process
busy while a backlog of low tasks and then one high task are queued, so the
whole backlog is waiting when the high task arrives. Once released, the
worker's start order (recorded by the probe) says how many low tasks ran
before the high one: counted in tasks, never timed.

Two ways to reach the top:

- by lane: ``in_lane(sig, "high")`` sends to the high lane's queue with its
  priority while the backlog waits in the low lane. On Redis each lane has its
  queue and the worker prefers the queues it lists first; on RabbitMQ, where a
  worker takes from its queues in turn, the project's lanes share one queue
  (``taskdeck.lanes.lanes_for``) and the priority alone orders them;
- inside one queue: the backlog and the urgent task share the low lane's queue
  and only the message priority differs — Redis priority sub-queues, RabbitMQ
  ``x-max-priority`` (``taskdeck.lanes.declare_queues``).
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import current_app
from django.conf import settings
from django.test import override_settings

from taskdeck.lanes import in_lane, lane_names, lane_options, lane_queue, lanes_for
from tests.support.probe import PROBE_ARGS, Probe

pytestmark = pytest.mark.django_db(transaction=True)

LANE_QUEUES = ["high_priority", "medium_priority", "low_priority"]
BACKLOG = 30
RECORD = "tests.support.probe.record"
BLOCK = "tests.support.probe.block"


def send(app: Any, name: str, args: tuple, lane: str, queue: str | None = None) -> Any:
    """Send ``name`` in ``lane`` (its queue and priority), or to ``queue`` with the lane's priority."""
    signature = in_lane(app.signature(name, args=args), lane)
    if queue is not None:
        signature = signature.set(queue=queue)
    return signature.apply_async()


def overtaken_by(app: Any, probe: Probe, urgent_queue: str | None = None) -> tuple[int, dict[str, Any]]:
    """How many of a low backlog started before one high task sent after it, and the high task's start.

    With ``urgent_queue`` the high task goes there (with the high lane's
    priority) instead of to the high lane's queue.
    """
    return probe.overtaken(
        lambda key: send(app, BLOCK, (key,), "low").id,
        lambda: [send(app, RECORD, (f"low-{i}",), "low").id for i in range(BACKLOG)],
        lambda: send(app, RECORD, ("high",), "high", queue=urgent_queue).id,
    )


def test_lane_options_name_the_queue_and_the_brokers_priority():
    assert lane_names() == ["high", "medium", "low"]
    assert [lane_queue(lane) for lane in lane_names()] == LANE_QUEUES
    redis, amqp = "redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"
    # Redis pops priority step 0 first; RabbitMQ delivers the highest number first.
    assert [lane_options(lane, redis)["priority"] for lane in lane_names()] == [0, 3, 6]
    assert [lane_options(lane, amqp)["priority"] for lane in lane_names()] == [9, 6, 3]


def test_redis_high_lane_overtakes_a_low_backlog_on_a_shared_worker(start_worker, probe):
    worker = start_worker(LANE_QUEUES, concurrency=1, args=PROBE_ARGS, env=probe.env)
    app = current_app._get_current_object()

    across, high = overtaken_by(app, probe)
    assert across == 0, f"{across} of {BACKLOG} low tasks started before the high one"
    assert (high["routing_key"], high["priority"], high["hostname"]) == ("high_priority", 0, worker.hostname)

    within, high = overtaken_by(app, probe, urgent_queue="low_priority")
    assert within == 0, f"{within} of {BACKLOG} low tasks in the same queue started before the high one"
    assert (high["routing_key"], high["priority"]) == ("low_priority", 0)
    assert worker.alive()


@pytest.mark.rabbitmq
def test_rabbitmq_high_lane_overtakes_a_low_backlog_on_a_shared_worker(
    start_amqp_worker, rabbitmq, rabbitmq_app, probe
):
    # The lanes core/settings.py gives a worker on RabbitMQ: there a worker consuming several
    # queues takes from them in turn, so lanes sharing workers share one queue and only
    # x-max-priority orders them (taskdeck.lanes.lanes_for).
    lanes = lanes_for(rabbitmq)
    worker = start_amqp_worker(
        list(dict.fromkeys(lanes.values())), concurrency=1, args=PROBE_ARGS, env=probe.env
    )

    with override_settings(TASKDECK={**settings.TASKDECK, "LANES": lanes}):
        overtaken, high = overtaken_by(rabbitmq_app, probe)
        # And on a lane's queue given at call time, only the message priority differs.
        within, urgent = overtaken_by(rabbitmq_app, probe, urgent_queue=lanes["low"])

    assert overtaken == 0, f"{overtaken} of {BACKLOG} low tasks started before the high one"
    assert (high["routing_key"], high["priority"], high["hostname"]) == (lanes["high"], 9, worker.hostname)
    assert within == 0, f"{within} of {BACKLOG} low tasks in the same queue started before the high one"
    assert (urgent["routing_key"], urgent["priority"]) == (lanes["low"], 9)
    assert worker.alive()
