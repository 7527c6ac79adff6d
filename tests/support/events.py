"""Events published on Celery's real event exchange, as a worker or an attacker would."""

from __future__ import annotations

from typing import Any

from celery import current_app
from celery.events.event import get_exchange


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
