"""Task messages published raw with kombu, and what a test checks after a worker met them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from kombu import Exchange

from tests.support.probe import record

SEP = "\x06\x16"  # kombu's separator between a Redis queue name and its priority step
STEPS = (0, 3, 6, 9)


def publish(
    app: Any,
    body: bytes | str,
    *,
    headers: Any = None,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    queue: str = "default",
    **properties: Any,
) -> None:
    """Publish ``body`` as it is to ``queue`` through ``app``'s broker: no serializer, no checks."""
    with app.connection_for_write() as conn:
        conn.Producer().publish(
            body,
            exchange=Exchange(queue, type="direct"),
            routing_key=queue,
            headers=headers if headers is not None else {},
            content_type=content_type,
            content_encoding=content_encoding,
            **properties,
        )


def task_headers(task_id: str | None = None, name: str = record.name, **extra: Any) -> dict[str, Any]:
    """Protocol-2 headers Celery would send for ``name``."""
    task_id = task_id or str(uuid.uuid4())
    return {"lang": "py", "task": name, "id": task_id, "root_id": task_id, "retries": 0, **extra}


def call_body(*args: Any, **kwargs: Any) -> bytes:
    """A protocol-2 body: ``[args, kwargs, embed]`` as JSON."""
    return json.dumps([list(args), kwargs, {"callbacks": None, "errbacks": None, "chain": None}]).encode()


def redis_depth(client: Any, queue: str = "default") -> int:
    """Messages waiting in a Redis ``queue``, every priority sub-queue included."""
    return sum(client.llen(queue + (f"{SEP}{step}" if step else "")) for step in STEPS)


def amqp_depth(app: Any, queue: str = "default") -> int:
    """Messages ready in a RabbitMQ ``queue`` (unacknowledged ones come back when their consumer stops)."""
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
