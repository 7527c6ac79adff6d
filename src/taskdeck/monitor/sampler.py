"""Queue depths from the broker, sampled into :class:`~taskdeck.models.QueueSample` rows."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from taskdeck.brokers import Broker
from taskdeck.models import QueueSample, TaskRun
from taskdeck.monitor.queues import ConsumerCounts, candidate_queues, configured_queues
from taskdeck.monitor.subscribers import Every, Subscriber

__all__ = ["QueueSampler", "configured_queues", "read_now"]

logger = logging.getLogger("taskdeck.monitor")


class QueueSampler(Subscriber):
    """Depth, sub-queues, unacked and oldest-message age of each queue, every ``interval`` s.

    ``connect`` returns a kombu connection to the broker (kept open between
    samples, reopened after an error). The oldest message's age is its
    publish time (the run's ``sent_at``) read back from the task runs: Redis
    lets us peek at the tail of each sub-queue; RabbitMQ does not.
    """

    name = "sampler"

    #: Seconds between two looks for queues beyond the configured ones.
    DISCOVER_INTERVAL = 30.0
    #: Undeclared queues followed at most (each sampled while it holds messages, and once at 0).
    FOLLOW_LIMIT = 1000

    def __init__(
        self,
        broker: Broker,
        connect: Callable[[], Any],
        queues: Callable[[], list[str]],
        interval: float,
        management_url: str | None = None,
        discover: bool = True,
        consumers: Callable[[], dict[str, int] | None] | None = None,
    ) -> None:
        self.broker = broker
        self.connect = connect
        self.queues = queues
        self.every = Every(interval)
        self.management_url = management_url
        self.discover = discover
        self.consumers = consumers
        self._discovered = Every(self.DISCOVER_INTERVAL)
        self._candidates: list[str] = []
        #: Undeclared queues that held messages at the last sample: sampled until they are empty.
        self._following: set[str] = set()
        self._conn: Any = None

    def on_tick(self, now: float) -> None:
        if not self.every.due(now):
            return
        try:
            self.sample(now)
        except Exception:
            logger.warning("queue sample failed; retrying next interval", exc_info=True)
            self._close()

    def sample(self, now: float) -> list[QueueSample]:
        """Read the depths and store them."""
        rows = self.read(now)
        QueueSample.objects.bulk_create(rows)
        return rows

    def read(self, now: float) -> list[QueueSample]:
        """Read the depths from the broker, as unsaved rows."""
        if self._conn is None:
            self._conn = self.connect()
            self._conn.ensure_connection(max_retries=1)
        configured = self.queues()
        if self.discover and self._discovered.due(now):
            self._candidates = candidate_queues(self.broker, self._conn)
        extra = [n for n in dict.fromkeys([*self._following, *self._candidates]) if n not in configured]
        depths = [
            d
            for d in self.broker.queue_depths(self._conn, [*configured, *extra])
            # An undeclared queue is shown while it holds messages, and once more at 0.
            if d.name in configured or d.ready or d.name in self._following
        ]
        self._following = {d.name for d in depths if d.ready and d.name not in configured}
        self._following = set(sorted(self._following)[: self.FOLLOW_LIMIT])
        names = [d.name for d in depths]
        unacked = self.broker.unacked_by_queue(self._conn, names, self.management_url) or {}
        counts = self.consumers() if self.consumers is not None else None
        oldest = self.broker.oldest_task_ids(self._conn, names)
        sent = dict(
            TaskRun.objects.filter(task_id__in=[t for ids in oldest.values() for t in ids])
            .exclude(sent_at=None)
            .values_list("task_id", "sent_at")
        )
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        rows = []
        for depth in depths:
            times = [s for t in oldest.get(depth.name, []) if (s := sent.get(t)) is not None]
            rows.append(
                QueueSample(
                    sampled_at=when,
                    queue=depth.name,
                    ready=depth.ready,
                    unacked=unacked.get(depth.name),
                    consumers=depth.consumers
                    if depth.consumers is not None or counts is None
                    else counts.get(depth.name, 0),
                    by_priority={str(k): v for k, v in depth.by_priority.items()},
                    oldest_age=max(now - min(times).timestamp(), 0.0) if times and depth.ready else None,
                )
            )
        return rows

    def on_stop(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._conn.release()
            self._conn = None


def read_now(app: Any, queues: list[str] | None = None) -> list[QueueSample]:
    """The depth of each configured queue right now (unsaved rows), for ``taskdeck status``."""
    from taskdeck import brokers, conf

    sampler = QueueSampler(
        brokers.for_url(app.conf.broker_url or ""),
        app.connection_for_read,
        configured_queues(app, queues),
        interval=0,
        management_url=conf.monitor()["RABBITMQ_MANAGEMENT_URL"],
        consumers=ConsumerCounts(app, timeout=conf.dashboard()["CONTROL_TIMEOUT"]),
    )
    try:
        return sampler.read(time.time())
    finally:
        sampler.on_stop()
