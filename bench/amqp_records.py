"""What one record per run costs a worker when it travels on RabbitMQ itself: a measurement, not a backend.

The record backend (:mod:`taskdeck.results.record`) needs a Redis. On a
RabbitMQ broker the same record could go to a durable queue of the broker,
published with confirms from the task's process before its message is
acknowledged (what a record must survive: the worker killed, the broker
restarted). This backend does only that worker half, so its cost can be
measured beside the others with the recorder stopped; nothing reads the
queue, and ``AsyncResult`` reads the results from the Redis the bench names
(the meta key is not written either: round trips of the client fail)::

    R=env.TASKDECK_RESULTS_REDIS_URL=redis://127.0.0.1:6379/13
    .venv/bin/python -m bench profile --brokers rabbitmq --rows bare,taskdeck-off --rounds 3 --no-profile \\
        --variant "redis:env.CELERY_BACKEND=taskdeck.results.record:RecordBackend;$R" \\
        --variant "amqp:env.CELERY_BACKEND=bench.amqp_records:Backend;$R"

docs/benchmarks.md has the figures, and why this is not built.
"""

from __future__ import annotations

import os
from typing import Any

from taskdeck.results.record import RecordBackend
from taskdeck.results.writebehind import encode_row

QUEUE = "taskdeck.bench.records"


class Backend(RecordBackend):
    """The record backend, each record published to :data:`QUEUE` on the broker (confirmed) instead."""

    _producer: Any = None
    _pid: int | None = None

    def producer(self) -> Any:
        """This process's producer on a connection of its own, with publisher confirms."""
        if self._producer is None or self._pid != os.getpid():
            from kombu import Connection, Producer, Queue

            connection = Connection(self.app.conf.broker_url, transport_options={"confirm_publish": True})
            channel = connection.channel()
            Queue(QUEUE, durable=True)(channel).declare()
            self._producer, self._pid = Producer(channel), os.getpid()
        return self._producer

    def ship(self, row: dict[str, Any]) -> None:
        # basic.publish, then wait for the broker's basic.ack: one round trip, as the Redis script.
        self.producer().publish(
            encode_row(row),
            routing_key=QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            retry=False,
        )
