"""RabbitMQ (AMQP 0.9.1): priority through ``x-max-priority``, depth by passive declare.

A RabbitMQ queue orders by priority only if it was declared with
``x-max-priority``; then a **higher number is a higher priority**. A queue
already declared without the argument cannot gain it: RabbitMQ refuses the
redeclaration (PRECONDITION_FAILED) until the queue is deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskdeck.brokers import QueueDepth

if TYPE_CHECKING:
    from kombu import Connection

MAX_PRIORITY = 10


class AMQPBroker:
    name = "rabbitmq"

    def lane_priority(self, rank: int) -> int:
        return max(MAX_PRIORITY - 1 - 3 * rank, 0)

    def queue_arguments(self) -> dict[str, object]:
        return {"x-max-priority": MAX_PRIORITY}

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
