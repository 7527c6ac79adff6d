"""Workers publish task events in batches (taskdeck.events): far fewer publishes, no event lost.

The test listens on Celery's event exchange itself, next to a real worker on
Redis, and counts both the messages published and the events inside them
(a batch is one ``task.multi`` message holding a list). With Celery's own
behaviour put back (``EVENT_FLUSH_INTERVAL = 0``) nearly every event is a
message of its own: the control that shows the test can tell the two apart.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from celery import current_app
from celery.events.event import get_exchange
from kombu import Consumer, Queue

from notifications.tasks import send_sms
from tests.support.services import trickled_batches

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 40
TYPES = ("task-received", "task-started", "task-succeeded")


def drain(conn: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.2)


@pytest.mark.parametrize("settings_module", ["core.settings", "bench.unbatched_settings"])
def test_task_events_arrive_complete_in_few_publishes(start_worker, broker, settings_module):
    messages: list[str] = []
    events: list[dict[str, Any]] = []

    def on_message(body: Any, message: Any) -> None:
        batch = body if isinstance(body, list) else [body]
        # A worker's task events; task-sent comes from the publisher, one message per task.
        if any(e.get("type") in TYPES for e in batch):
            messages.append(message.delivery_info.get("routing_key", ""))
            events.extend(batch)
        message.ack()

    # The app's connection: its transport options name the Redis channels events go through.
    with current_app.connection_for_read() as conn:
        # Celery's event exchange: a fanout (PUBLISH) on Redis, a topic exchange elsewhere.
        exchange = get_exchange(conn, name=current_app.conf.event_exchange)
        queue = Queue(f"test-events-{uuid.uuid4().hex[:8]}", exchange, routing_key="#", auto_delete=True)
        Consumer(conn, [queue], callbacks=[on_message], accept=["json"]).consume()
        drain(conn, 0.5)  # subscribed before anything is sent
        # Task events on: with the record backend, the default on Redis, a worker sends none.
        env = {"DJANGO_SETTINGS_MODULE": settings_module, "TASKDECK_EVENTS": "1"}
        start_worker(["notifications"], env=env)
        results = [send_sms.delay("+4412345", f"message {i}") for i in range(TASKS)]
        for result in results:
            result.get(timeout=60)
        ids = {r.id for r in results}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = Counter(e["type"] for e in events if e.get("uuid") in ids)
            if all(seen[t] >= TASKS for t in TYPES):
                break
            drain(conn, 0.3)

    ours = [e for e in events if e.get("uuid") in ids and e.get("type") in TYPES]
    counts = Counter(e["type"] for e in ours)
    assert {t: counts[t] for t in TYPES} == dict.fromkeys(TYPES, TASKS), counts  # none lost, none twice
    print(f"{settings_module}: {len(ours)} worker task events in {len(messages)} messages")
    if settings_module == "core.settings":
        assert len(messages) <= len(ours) / 4, (len(messages), len(ours))
    else:
        assert len(messages) > len(ours) / 4, (len(messages), len(ours))


@pytest.mark.parametrize("settings_module", ["core.settings", "tests.support.unlingered_settings"])
def test_events_that_trickle_in_are_written_together(broker, start_recorder, settings_module):
    """A recorder on events (no records) that gets an event waits for more
    (``MONITOR["EVENT_LINGER"]``, 0.5 s) before it writes the batch: ten events sent
    30 ms apart go in at most three batches (each batch stamps its runs' ``updated_at``
    once). The control, ``EVENT_LINGER = 0``, writes them in more."""
    direct = "taskdeck.results.backend:DatabaseBackend"
    start_recorder(env={"CELERY_BACKEND": direct, "DJANGO_SETTINGS_MODULE": settings_module})
    with current_app.connection_for_write() as conn:
        dispatcher = current_app.events.Dispatcher(conn, hostname="linger@test", enabled=True)

        def received() -> str:
            task_id = str(uuid.uuid4())
            dispatcher.send("task-received", uuid=task_id, name="notifications.tasks.send_sms", args="()")
            return task_id

        batches = trickled_batches(received)
        dispatcher.close()
    if settings_module == "core.settings":
        assert len(batches) <= 3, sorted(batches)
    else:
        assert len(batches) > 3, sorted(batches)
