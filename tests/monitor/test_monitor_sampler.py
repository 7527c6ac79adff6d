"""Queue depth equals what Redis holds, priority sub-queues and unacked messages included."""

from __future__ import annotations

import time

import pytest
import redis
from celery import current_app

from maintenance.tasks import rebuild_search_index
from taskdeck import brokers
from taskdeck.models import QueueSample, TaskRun
from taskdeck.monitor.sampler import QueueSampler
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEP = "\x06\x16"  # kombu's separator between a queue name and its priority step


def sampler(queues):
    app = current_app._get_current_object()
    return QueueSampler(brokers.for_url(app.conf.broker_url), app.connection_for_read, lambda: queues, 1)


def test_depth_per_priority_sub_queue_matches_redis(broker, start_recorder):
    start_recorder()  # records the task-sent events: the oldest message's age comes from them
    sent = {0: 3, 3: 2, 9: 4}
    for priority, count in sent.items():
        for i in range(count):
            rebuild_search_index.apply_async((i,), queue="low_priority", priority=priority)
    wait_for(lambda: TaskRun.objects.filter(state="SENT").count() == 9, 60, "nine sent runs recorded")

    (sample,) = sampler(["low_priority"]).sample(time.time())
    client = redis.Redis.from_url(broker)
    held = {step: client.llen("low_priority" + (f"{SEP}{step}" if step else "")) for step in (0, 3, 6, 9)}
    assert held == {0: 3, 3: 2, 6: 0, 9: 4}
    assert sample.by_priority == {str(k): v for k, v in held.items()}
    assert sample.ready == 9
    assert sample.unacked == 0
    assert sample.oldest_age is not None and sample.oldest_age >= 0
    # The recorder process samples too, into the same time series.
    wait_for(
        lambda: QueueSample.objects.filter(queue="low_priority", ready=9).exclude(pk=sample.pk).exists(),
        30,
        "the recorder's own sample",
    )


def test_unacked_messages_are_counted_per_queue(broker, start_worker, start_recorder):
    start_recorder()
    start_worker(["low_priority"], concurrency=1)
    running = rebuild_search_index.apply_async((1,), {"seconds": 8}, queue="low_priority")
    rebuild_search_index.apply_async((2,), queue="low_priority")  # waits behind it (prefetch 1)
    started = TaskRun.objects.filter(task_id=running.id, state="STARTED")
    wait_for(started.exists, 60, "the slow task to start")

    sample, other = sampler(["low_priority", "default"]).sample(time.time())
    client = redis.Redis.from_url(broker)
    assert sample.unacked == client.hlen("unacked") == 1
    held = [client.llen("low_priority" + (f"{SEP}{step}" if step else "")) for step in (0, 3, 6, 9)]
    assert sample.ready == sum(held) == 1
    assert (other.queue, other.ready, other.unacked) == ("default", 0, 0)
    running.get(timeout=60)
