"""Which queues exist, which hold messages, and which have no consumer.

One place answers "is anybody consuming this queue?" for every part of the
monitor (the Queues page, ``taskdeck status``, the API, /metrics, STUCK
detection): :func:`without_consumer` on a queue sample. A sample's
``consumers`` comes from the broker where it counts them (RabbitMQ), else
from the workers' ``inspect active_queues`` replies (:class:`ConsumerCounts`,
used by the sampler on Redis).

Queues are found beyond those the app declares (:func:`configured_queues`):
the broker is asked which it holds (Redis: kombu's binding tables and list
keys), and the queues recorded runs were sent to are probed, so a message a
route sent to a misspelt queue shows up wherever queues are shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from taskdeck.models import QueueSample, TaskRun, Worker

logger = logging.getLogger("taskdeck.monitor")

#: Queue names probed per discovery at most (a broker with thousands of queues is cut here).
DISCOVERY_LIMIT = 1000


def configured_queues(app: Any, explicit: list[str] | None) -> Callable[[], list[str]]:
    """The queues the monitor always shows: ``explicit``, else every queue the Celery app declares."""

    def names() -> list[str]:
        if explicit:
            return list(explicit)
        declared = [q.name for q in (app.conf.task_queues or [])]
        return list(dict.fromkeys([*declared, app.conf.task_default_queue]))

    return names


def without_consumer(sample: QueueSample | None) -> bool:
    """True when ``sample``'s queue holds ready messages and no worker consumes it.

    False when it is empty, or when its consumers are not known (no answer from the workers).
    """
    return sample is not None and holds_unconsumed(sample.ready, sample.consumers)


def holds_unconsumed(ready: int, consumers: int | None) -> bool:
    """:func:`without_consumer` of a sample's two counts."""
    return bool(ready and consumers == 0)


def queues_without_consumer(samples: Iterable[QueueSample] | None = None) -> list[QueueSample]:
    """The newest samples (or ``samples``) of queues that hold messages nobody consumes."""
    rows = QueueSample.objects.latest_per_queue() if samples is None else samples
    return [s for s in rows if without_consumer(s)]


def candidate_queues(broker: Any, conn: Any) -> list[str]:
    """Queues that may hold messages: those the broker lists, and those recorded runs were sent to."""
    found = list(broker.discover_queues(conn))
    try:
        found += TaskRun.objects.distinct_values("queue", limit=DISCOVERY_LIMIT)
    except Exception:  # the database is down: the broker's list alone
        logger.warning("recorded queue names could not be read", exc_info=True)
    return list(dict.fromkeys(found))[:DISCOVERY_LIMIT]


class ConsumerCounts:
    """Queue -> how many online workers consume it, asked with ``inspect active_queues`` every ``interval`` s.

    The reply is awaited for ``timeout`` s at most, and no longer than it takes
    the workers the recorder knows online to answer. Between asks the last
    answer is returned; None until one came.
    """

    def __init__(self, app: Any, interval: float = 30.0, timeout: float = 1.0) -> None:
        self.app = app
        self.interval = interval
        self.timeout = timeout
        self._counts: dict[str, int] | None = None
        self._at: float | None = None

    def __call__(self) -> dict[str, int] | None:
        now = time.monotonic()
        if self._at is not None and now - self._at < self.interval:
            return self._counts
        self._at = now
        try:
            online = Worker.objects.online().count()
            inspect = self.app.control.inspect(timeout=self.timeout, limit=online or None)
            replies = inspect.active_queues() or {}
        except Exception:  # the broker or the database is down: keep the last answer
            logger.warning("inspect active_queues failed", exc_info=True)
            return self._counts
        counts: dict[str, int] = {}
        for queues in replies.values():
            for queue in queues if isinstance(queues, list) else []:
                name = queue.get("name") if isinstance(queue, dict) else None
                if isinstance(name, str):
                    counts[name] = counts.get(name, 0) + 1
        self._counts = counts
        return counts
