"""RabbitMQ (AMQP 0.9.1): priority through ``x-max-priority``, depth by passive declare.

A RabbitMQ queue orders by priority only if it was declared with
``x-max-priority``; then a **higher number is a higher priority**. A queue
already declared without the argument cannot gain it: RabbitMQ refuses the
redeclaration (PRECONDITION_FAILED) until the queue is deleted.

Across queues there is no order: a Celery worker consumes all its queues on
one channel with one prefetch limit, and when a slot frees the queues waiting
on the channel take turns. Lanes that share workers therefore share one
queue on RabbitMQ (:func:`taskdeck.lanes.lanes_for`; docs/lanes.md).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from base64 import b64encode
from typing import TYPE_CHECKING

from taskdeck.brokers import QueueDepth

if TYPE_CHECKING:
    from kombu import Connection

MAX_PRIORITY = 10


class AMQPBroker:
    name = "rabbitmq"
    # One channel consumes every queue of a worker; when its prefetch frees,
    # the queues waiting on it take turns: no queue is preferred.
    one_lane_queue = True

    def lane_priority(self, rank: int) -> int:
        return max(MAX_PRIORITY - 1 - 3 * rank, 0)

    def queue_arguments(self) -> dict[str, object]:
        return {"x-max-priority": MAX_PRIORITY}

    def redelivery_at(self, reserved: float, worker_gone: float, options: dict[str, object]) -> float | None:
        # RabbitMQ requeues a channel's unacknowledged messages when the channel closes:
        # at once when the process dies (its socket closes with it), after the missed
        # AMQP heartbeats (broker_heartbeat) when its host is cut off.
        return worker_gone

    def queue_depths(self, conn: Connection, queues: list[str]) -> list[QueueDepth]:
        depths = []
        for queue in queues:
            channel = conn.channel()
            try:
                _, ready, consumers = channel.queue_declare(queue=queue, passive=True)
            except conn.channel_errors:
                # 404: the queue was never declared (no worker or producer used it yet).
                depths.append(QueueDepth(name=queue, ready=0, exists=False))
                continue
            finally:
                try:
                    channel.close()
                except conn.channel_errors + conn.connection_errors:
                    pass
            depths.append(QueueDepth(name=queue, ready=ready, consumers=consumers))
        return depths

    def unacked_by_queue(
        self, conn: Connection, queues: list[str], management_url: str | None = None
    ) -> dict[str, int] | None:
        """From the management plugin's HTTP API; AMQP itself does not report unacked counts."""
        if not management_url:
            return None
        vhost = conn.virtual_host or "/"
        return management_unacked(management_url, vhost, queues)

    def oldest_task_ids(self, conn: Connection, queues: list[str]) -> dict[str, list[str]]:
        return {}  # peeking would take the message off the queue


def management_unacked(url: str, vhost: str, queues: list[str], timeout: float = 2.0) -> dict[str, int]:
    """``messages_unacknowledged`` per queue from ``GET /api/queues/<vhost>/<queue>``."""
    parts = urllib.parse.urlsplit(url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
    user, password = parts.username or "guest", parts.password or "guest"
    auth = b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    out = {}
    for queue in queues:
        path = f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
        request = urllib.request.Request(base + path, headers={"Authorization": f"Basic {auth}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
                out[queue] = int(json.load(response).get("messages_unacknowledged") or 0)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
    return out
