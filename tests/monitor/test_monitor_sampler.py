"""Queue depth equals what Redis holds, priority sub-queues and unacked messages included."""

from __future__ import annotations

import time

import pytest
import redis
from celery import current_app

from maintenance.tasks import rebuild_search_index
from taskdeck import brokers
from taskdeck.models import QueueSample, TaskRun
from taskdeck.monitor.queues import ConsumerCounts
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


def test_queues_found_on_the_broker_are_capped_in_metrics_as_task_names_are(broker, client, start_worker):
    """Any Redis list key becomes a queue the sampler follows: 600 of them, more than the cap of
    500 labels (METRICS_MAX_LABEL_VALUES), leave /metrics bounded and say how many were folded.

    The declared queues keep their own label; the others past the cap are summed under "(other)".
    """
    from taskdeck import conf

    limit = conf.monitor()["METRICS_MAX_LABEL_VALUES"]
    stray = limit + 100
    client_ = redis.Redis.from_url(broker)
    with client_.pipeline() as pipe:
        for i in range(stray):
            pipe.lpush(f"cache:list:{i:04d}", "a", "b")  # two items each: not task messages
        pipe.execute()
    declared = ["default", "high_priority", "low_priority"]
    rebuild_search_index.apply_async((1,), queue="low_priority")
    start_worker(["default"], concurrency=1)  # the only queue with a consumer
    app = current_app._get_current_object()
    counts = ConsumerCounts(app, timeout=5.0)
    rows = QueueSampler(
        brokers.for_url(app.conf.broker_url), app.connection_for_read, lambda: declared, 1, consumers=counts
    ).sample(time.time())
    assert len({r.queue for r in rows}) == stray + len(declared)  # the sampler follows them all

    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    families = (
        "taskdeck_queue_messages_ready",
        "taskdeck_queue_messages_unacked",
        "taskdeck_queue_consumers",
        "taskdeck_queue_without_consumer",
    )
    kept = limit - len(declared)
    for family in families:
        series = [line for line in text.splitlines() if line.startswith(family + "{")]
        labels = {line.split('queue="')[1].split('"')[0] for line in series}
        assert len(labels) == limit + 1 and "(other)" in labels, (family, len(labels))
        assert set(declared) <= labels, family
    ready: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("taskdeck_queue_messages_ready{"):
            queue = line.split('queue="')[1].split('"')[0]
            ready[queue] = ready.get(queue, 0) + float(line.rsplit(" ", 1)[1])
    assert ready["(other)"] == 2 * (stray - kept)  # two items in each folded key, summed
    assert ready["low_priority"] == 1
    # (other): the fewest consumers of its queues, and 1 as some of them hold messages nobody consumes.
    assert 'taskdeck_queue_consumers{queue="default"} 1.0' in text
    assert 'taskdeck_queue_consumers{queue="(other)"} 0.0' in text
    assert 'taskdeck_queue_without_consumer{queue="(other)"} 1.0' in text
    assert 'taskdeck_queue_without_consumer{queue="low_priority"} 1.0' in text
    assert f"taskdeck_queue_labels_folded {float(stray - kept)}" in text
    print(f"{stray} list keys: {kept} kept their label, {stray - kept} folded; {len(text)} bytes")
