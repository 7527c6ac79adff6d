"""What taskdeck needs to know about a broker, one module per broker.

Nothing outside this package looks at a broker URL's scheme: callers ask
:func:`for_url` for a :class:`Broker` and use its small interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from kombu import Connection


@dataclass(frozen=True)
class QueueDepth:
    """How many messages a queue holds, as the broker reports it."""

    name: str
    ready: int
    #: Messages delivered to a worker and not acknowledged yet, where the
    #: broker tells (RabbitMQ per queue; Redis for all queues together).
    unacked: int | None = None
    consumers: int | None = None
    #: Ready messages per priority sub-queue (Redis), highest priority first.
    by_priority: dict[int, int] = field(default_factory=dict)
    exists: bool = True


@dataclass(frozen=True)
class RawMessage:
    """One waiting message as the broker holds it, not decoded yet.

    Redis: ``raw`` is the list item (kombu's JSON envelope). RabbitMQ: ``raw``
    is the body, and ``envelope`` carries the headers and properties AMQP
    keeps apart.
    """

    raw: bytes
    #: The sub-queue's priority step (Redis) or the message's own priority.
    priority: int | None
    #: 0 = the oldest message of its sub-queue (Redis) or queue (RabbitMQ).
    position: int
    envelope: dict[str, Any] | None = None


@dataclass(frozen=True)
class MessageWindow:
    """A page of one (sub-)queue's waiting messages, oldest first."""

    queue: str
    priority: int | None
    #: Ready messages in the (sub-)queue when it was read.
    total: int
    messages: list[RawMessage]
    #: Whether the window ends before its ``limit`` because its messages reached the bytes asked
    #: for (``max_bytes``): more follow it.
    cut: bool = False


#: How deep a search for one waiting message reads a queue (its page, delete, move), and the most
#: messages it reads at a time.
FIND_LIMIT = 100_000
FIND_WINDOW = 1_000
#: Bytes of waiting messages a search holds at once: a queue of 10 MiB messages is read a few at a
#: time, not a thousand (10 GB in the web process).
FIND_BYTES = 32 * 1024 * 1024
#: The first window, before the messages' size is known.
FIND_FIRST = 10
#: Bytes of waiting messages one page of the message browser reads at most (all its sub-queues
#: together), beyond the first message of each: 200 messages of 10 MiB are read a few at a time.
PAGE_BYTES = 32 * 1024 * 1024


class SearchWindows:
    """The windows a search for one message reads a queue in, oldest first.

    Iterating gives ``(offset, count)``; after each window, :meth:`held` says
    how many bytes its messages were, and the next window holds about
    :data:`FIND_BYTES`: up to :data:`FIND_WINDOW` small messages, one at a time
    when each is larger than the budget. :data:`FIND_LIMIT` deep at most.
    """

    def __init__(self) -> None:
        self.offset, self.count = 0, FIND_FIRST

    def __iter__(self) -> Any:
        while self.offset < FIND_LIMIT:
            count = min(self.count, FIND_LIMIT - self.offset)
            yield self.offset, count
            self.offset += count

    def held(self, count: int, size: int) -> None:
        """The window of ``count`` messages (per sub-queue) just read held ``size`` bytes in all."""
        self.count = max(1, min(FIND_WINDOW, count * FIND_BYTES // max(size, 1)))


class Broker(Protocol):
    """The broker-specific facts taskdeck uses."""

    name: str

    #: Whether lanes meant to share workers should share one queue: True where
    #: a worker consuming several queues takes from them in turn (RabbitMQ), so
    #: only in-queue priority puts a high task first; False where the worker
    #: can be told to prefer the first queue it lists (Redis), or where there
    #: is no priority at all.
    one_lane_queue: bool

    def lane_priority(self, rank: int) -> int:
        """Message priority for the lane at ``rank`` (0 = the highest lane)."""

    def queue_arguments(self) -> dict[str, object]:
        """Arguments to declare a lane queue with (e.g. ``x-max-priority``)."""

    def queue_depths(self, conn: Connection, queues: list[str]) -> list[QueueDepth]:
        """Depth of each named queue, read from the broker itself."""

    def unacked_by_queue(
        self, conn: Connection, queues: list[str], management_url: str | None = None
    ) -> dict[str, int] | None:
        """Messages delivered and not acknowledged, per queue; None where the broker cannot tell."""

    def oldest_task_ids(self, conn: Connection, queues: list[str]) -> dict[str, list[str]]:
        """Task ids of the oldest ready message(s) of each queue, where the broker lets us peek.

        Several per queue when the queue has sub-queues (Redis priority steps):
        the caller compares their publish times.
        """

    def redelivery_at(self, reserved: float, worker_gone: float, options: dict[str, object]) -> float | None:
        """When the broker gives an unacknowledged message of a dead worker to a worker again.

        ``reserved``: when the worker took the message; ``worker_gone``: the
        worker's last sign of life; ``options``: ``broker_transport_options``.
        None where the broker does not say.
        """

    def discover_queues(self, conn: Connection) -> list[str]:
        """Names of queues the broker knows of, declared by this app or not (may include empty ones)."""

    def bound_queues(self, conn: Connection) -> set[str]:
        """Queues the broker's own bindings name (Redis: kombu's binding tables); empty where it keeps none.

        Unlike :meth:`discover_queues`, never a key found by its type alone: a
        list some other program keeps in the same Redis is not among them.
        """

    def browse(
        self,
        conn: Connection,
        queue: str,
        priority: int | None,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[MessageWindow]:
        """Waiting messages of ``queue``, oldest first, per sub-queue (one window where there is none).

        ``priority`` picks one sub-queue; ``offset`` and ``limit`` bound the
        window, so a queue of any length is read a page at a time. With
        ``max_bytes``, the windows together hold about that many bytes at most:
        each still holds its first message, whatever its size, and a window
        that stops short says so (:attr:`MessageWindow.cut`).
        """

    def remove_message(
        self, conn: Connection, queue: str, match: Callable[[RawMessage], bool], to: str | None
    ) -> RawMessage | None:
        """Take the first waiting message ``match`` accepts off ``queue``, atomically.

        With ``to``, the same message is put on queue ``to`` in the same step
        (a move); without, it is dropped (a delete). Returns the message, or
        None when it is not waiting any more (a worker took it).
        """


def is_plain_redis(url: str) -> bool:
    """Whether ``url`` is a Redis that redis-py connects to directly (Sentinel is not)."""
    return for_url(url).name == "redis" and not url.lower().startswith("sentinel")


def for_url(url: str) -> Broker:
    """The :class:`Broker` for a Celery broker URL."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme in {"redis", "rediss", "redis+socket", "sentinel"}:
        from taskdeck.brokers.redis import RedisBroker

        return RedisBroker()
    if scheme in {"amqp", "amqps", "pyamqp", "librabbitmq"}:
        from taskdeck.brokers.amqp import AMQPBroker

        return AMQPBroker()
    from taskdeck.brokers.generic import GenericBroker

    return GenericBroker(scheme)
