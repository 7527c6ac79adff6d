"""Redis: priority through sub-queues, depth by LLEN.

kombu's Redis transport keeps one list per priority step for each queue
(steps 0, 3, 6, 9 by default) and pops them in step order, so **0 is the
highest priority on Redis** and a message sent without a priority lands in
step 0. Messages a worker has taken but not acknowledged sit in one
``unacked`` hash for all queues until acked, or until the visibility
timeout restores them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskdeck.brokers import QueueDepth

if TYPE_CHECKING:
    from kombu import Connection

#: kombu's default priority steps; the lanes use the first ones.
DEFAULT_STEPS = (0, 3, 6, 9)


class RedisBroker:
    name = "redis"

    def lane_priority(self, rank: int) -> int:
        return DEFAULT_STEPS[min(rank, len(DEFAULT_STEPS) - 1)]

    def queue_arguments(self) -> dict[str, object]:
        return {}  # priority needs no declaration on Redis

    def queue_depths(self, conn: Connection, queues: list[str]) -> list[QueueDepth]:
        channel = conn.default_channel
        client = channel.client
        steps = list(channel.priority_steps)
        prefix = channel.global_keyprefix or ""
        with client.pipeline() as pipe:
            for queue in queues:
                for step in steps:
                    pipe.llen(prefix + channel._q_for_pri(queue, step))
            pipe.hlen(prefix + channel.unacked_key)
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
