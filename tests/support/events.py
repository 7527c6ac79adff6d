"""Events published on Celery's real event exchange, as a worker or an attacker would."""

from __future__ import annotations

import time
from typing import Any

from celery import current_app
from celery.events.event import get_exchange
from django.db import transaction

from taskdeck.models import Worker
from taskdeck.monitor.subscribers import Subscriber


class Refuser(Subscriber):
    """Makes PostgreSQL refuse the batch of any event of a task named ``refuse.me``: a real DataError."""

    name = "refuser"

    def on_events(self, events: list[dict[str, Any]]) -> None:
        if any(e.get("name") == "refuse.me" for e in events):
            with transaction.atomic():
                Worker.objects.create(hostname="x" * 300)


def publish_events(bodies: list[Any]) -> None:
    """Publish each body as one JSON message on the event exchange (a list is a batch)."""
    with current_app.connection_for_write() as conn:
        producer = conn.Producer(serializer="json")
        exchange = get_exchange(conn, name=current_app.conf.event_exchange)
        for body in bodies:
            producer.publish(body, exchange=exchange, routing_key="task.multi", declare=[exchange])


def publish_raw(body: bytes, content_type: str) -> None:
    """Publish ``body`` as it is, with ``content_type``, on the event exchange."""
    with current_app.connection_for_write() as conn:
        exchange = get_exchange(conn, name=current_app.conf.event_exchange)
        conn.Producer().publish(
            body,
            exchange=exchange,
            routing_key="task.multi",
            content_type=content_type,
            content_encoding="binary",
            declare=[exchange],
        )


def run_events(task_id: str, name: str, start: float, *, queue: str = "default", **extra: Any) -> list[dict]:
    """The events of one run that succeeds: sent, received, started, succeeded."""
    worker = {"hostname": "fuzz@test", "utcoffset": 0, "pid": 1, "clock": 1}
    return [
        {"type": "task-sent", "uuid": task_id, "name": name, "queue": queue, "timestamp": start, **extra},
        {"type": "task-received", "uuid": task_id, "name": name, "timestamp": start + 0.01, **worker},
        {"type": "task-started", "uuid": task_id, "timestamp": start + 0.02, **worker},
        {"type": "task-succeeded", "uuid": task_id, "runtime": 0.5, "result": "1", "timestamp": start + 0.52}
        | worker,
    ]


def wait_applied(*names: str, timeout: float = 90) -> None:
    """Wait until each recorder named has applied everything published so far.

    A heartbeat stamped now is published (again, until it is seen): a recorder's
    ``last_event_at`` reaching it means that recorder applied every event published before it
    (one queue, applied in order). Repeated because a recorder that just started may miss an
    event published before its subscription reached the broker.
    """
    from taskdeck.models import RecorderState
    from tests.support.services import wait_for

    stamp = time.time()

    def seen() -> bool:
        publish_events([{"type": "worker-heartbeat", "hostname": "mark@test", "timestamp": time.time()}])
        marks = dict(RecorderState.objects.filter(name__in=names).values_list("name", "last_event_at"))
        return all(marks.get(n) and marks[n].timestamp() >= stamp for n in names)

    wait_for(seen, timeout, f"recorders {names} to apply every event")
