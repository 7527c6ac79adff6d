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
from typing import TYPE_CHECKING, Any

from taskdeck.brokers import MessageWindow, QueueDepth, RawMessage

if TYPE_CHECKING:
    from collections.abc import Callable

    from kombu import Connection

MAX_PRIORITY = 10

#: Messages taken (and given back) to show one page, or to find one message: AMQP
#: can only read a queue from its head, so deeper messages are out of reach.
PEEK_LIMIT = 1_000


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

    def discover_queues(self, conn: Connection) -> list[str]:
        return []  # AMQP cannot list queues; the sampler also tries the queues runs were sent to

    def bound_queues(self, conn: Connection) -> set[str]:
        return set()

    def browse(
        self,
        conn: Connection,
        queue: str,
        priority: int | None,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[MessageWindow]:
        """``basic_get`` without ack up to ``offset + limit`` messages, then the channel closes.

        Closing the channel gives every message back to the queue: RabbitMQ puts
        each back in its place, marked *redelivered*. While the page is read
        those messages are held by this channel, not by a worker. With
        ``max_bytes``, the first message past it is taken and not kept (a body's
        size is known once it has arrived).
        """
        channel: Any = conn.channel()
        try:
            try:
                _, ready, _ = channel.queue_declare(queue=queue, passive=True)
            except conn.channel_errors:
                return [MessageWindow(queue, None, 0, [])]
            messages: list[RawMessage] = []
            used = 0
            for position in range(min(offset + limit, ready, PEEK_LIMIT)):
                message = channel.basic_get(queue=queue, no_ack=False)
                if message is None:
                    break
                if position < offset:
                    continue
                size = len(message.body)
                if messages and max_bytes is not None and used + size > max_bytes:
                    return [MessageWindow(queue, None, ready, messages, cut=True)]
                messages.append(_raw(message, position))
                used += size
            return [MessageWindow(queue, None, ready, messages)]
        finally:
            _close(conn, channel)

    def remove_message(
        self, conn: Connection, queue: str, match: Callable[[RawMessage], bool], to: str | None
    ) -> RawMessage | None:
        """Read from the head until ``match``; ack it (and publish it to ``to``) in one AMQP transaction.

        The messages read before it go back to the queue when the channel closes (redelivered).
        """
        if to is not None and not self.queue_depths(conn, [to])[0].exists:
            # Published to the default exchange, a message for a queue that does not exist is dropped.
            raise LookupError(f"queue {to!r} does not exist on the broker: nothing was moved")
        channel: Any = conn.channel()
        try:
            channel.tx_select()
            for position in range(PEEK_LIMIT):
                message = channel.basic_get(queue=queue, no_ack=False)
                if message is None:
                    return None
                found = _raw(message, position)
                if not match(found):
                    continue
                if to is not None:
                    channel.basic_publish(message, exchange="", routing_key=to)
                channel.basic_ack(message.delivery_tag)
                channel.tx_commit()
                return found
            return None
        except conn.channel_errors:
            return None  # the queue does not exist (any more)
        finally:
            _close(conn, channel)


def _raw(message: Any, position: int) -> RawMessage:
    properties = dict(message.properties)
    headers = properties.pop("application_headers", None) or {}
    envelope = {
        "headers": headers,
        "properties": properties,
        "content-type": properties.get("content_type"),
        "content-encoding": properties.get("content_encoding"),
        "redelivered": bool(message.delivery_info.get("redelivered")),
    }
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return RawMessage(body, properties.get("priority"), position, envelope)


def _close(conn: Connection, channel: Any) -> None:
    try:
        channel.close()
    except conn.channel_errors + conn.connection_errors:
        pass


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
