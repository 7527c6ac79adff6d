"""Redis: priority through sub-queues, depth by LLEN.

kombu's Redis transport keeps one list per priority step for each queue
(steps 0, 3, 6, 9 by default) and pops them in step order, so **0 is the
highest priority on Redis** and a message sent without a priority lands in
step 0. Messages a worker has taken but not acknowledged sit in one
``unacked`` hash for all queues until acked, or until the visibility
timeout restores them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from taskdeck.brokers import QueueDepth

if TYPE_CHECKING:
    from kombu import Connection

#: Unacked entries read per sample at most: the hash is bounded by prefetch x
#: worker processes, so this only caps the cost of a pathological backlog.
UNACKED_SCAN_LIMIT = 100_000

#: kombu's default visibility timeout (seconds), when broker_transport_options has none.
VISIBILITY_TIMEOUT = 3600

#: kombu's default priority steps; the lanes use the first ones.
DEFAULT_STEPS = (0, 3, 6, 9)


class RedisBroker:
    name = "redis"
    # queue_order_strategy "priority" makes a worker prefer the queues it lists first.
    one_lane_queue = False

    def lane_priority(self, rank: int) -> int:
        return DEFAULT_STEPS[min(rank, len(DEFAULT_STEPS) - 1)]

    def queue_arguments(self) -> dict[str, object]:
        return {}  # priority needs no declaration on Redis

    def redelivery_at(self, reserved: float, worker_gone: float, options: dict[str, object]) -> float | None:
        # kombu restores an unacked message once visibility_timeout seconds have passed
        # since it was reserved, whether or not its worker lives (a consumer's periodic
        # sweep puts it back on its queue: up to ~100 s later with kombu's defaults).
        timeout = options.get("visibility_timeout", VISIBILITY_TIMEOUT)
        return reserved + float(timeout if isinstance(timeout, int | float) else VISIBILITY_TIMEOUT)

    def queue_depths(self, conn: Connection, queues: list[str]) -> list[QueueDepth]:
        channel: Any = conn.default_channel  # kombu's Redis Channel
        client = channel.client
        steps = list(channel.priority_steps)
        # kombu's client adds global_keyprefix to LLEN and HLEN itself.
        with client.pipeline() as pipe:
            for queue in queues:
                for step in steps:
                    pipe.llen(channel._q_for_pri(queue, step))
            pipe.hlen(channel.unacked_key)
            replies = pipe.execute()
        unacked_total = replies[-1]
        depths = []
        per_queue = len(steps)
        for index, queue in enumerate(queues):
            chunk = replies[index * per_queue : (index + 1) * per_queue]
            by_priority = dict(zip(steps, chunk, strict=True))
            depths.append(
                QueueDepth(
                    name=queue,
                    ready=sum(by_priority.values()),
                    by_priority=by_priority,
                    # Redis keeps one unacked hash for every queue: report it once.
                    unacked=unacked_total if index == 0 else None,
                )
            )
        return depths

    def unacked_by_queue(
        self, conn: Connection, queues: list[str], management_url: str | None = None
    ) -> dict[str, int] | None:
        """Count the ``unacked`` hash by routing key (each entry is ``[message, exchange, key]``)."""
        channel: Any = conn.default_channel  # kombu's Redis Channel
        counts = dict.fromkeys(queues, 0)
        # HSCAN and LINDEX are not among the commands kombu's client prefixes.
        key = (channel.global_keyprefix or "") + channel.unacked_key
        for n, (_, raw) in enumerate(channel.client.hscan_iter(key, count=1000)):
            if n >= UNACKED_SCAN_LIMIT:
                break
            try:
                _, _, routing_key = json.loads(raw)
            except (TypeError, ValueError):
                continue
            if isinstance(routing_key, bytes):
                routing_key = routing_key.decode()
            if routing_key in counts:
                counts[routing_key] += 1
        return counts

    def oldest_task_ids(self, conn: Connection, queues: list[str]) -> dict[str, list[str]]:
        """The message at the tail of each sub-queue (kombu LPUSHes and BRPOPs: the tail is oldest)."""
        channel: Any = conn.default_channel  # kombu's Redis Channel
        steps = list(channel.priority_steps)
        with channel.client.pipeline() as pipe:
            for queue in queues:
                for step in steps:
                    pipe.lindex((channel.global_keyprefix or "") + channel._q_for_pri(queue, step), -1)
            replies = pipe.execute()
        out: dict[str, list[str]] = {}
        for index, queue in enumerate(queues):
            for raw in replies[index * len(steps) : (index + 1) * len(steps)]:
                task_id = _task_id(raw)
                if task_id:
                    out.setdefault(queue, []).append(task_id)
        return out


def _task_id(raw: bytes | str | None) -> str | None:
    if not raw:
        return None
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return None
    headers = message.get("headers") or {}
    return headers.get("id") or (message.get("properties") or {}).get("correlation_id")


def client_url(url: str) -> str:
    """A kombu Redis URL as redis-py takes it: ``redis+socket:///path`` becomes ``unix:///path``."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url
