"""Any other kombu transport: lanes still route by queue; no priority, no depth."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskdeck.brokers import MessageWindow, QueueDepth, RawMessage

if TYPE_CHECKING:
    from collections.abc import Callable

    from kombu import Connection


class GenericBroker:
    one_lane_queue = False  # no priority to order one queue by

    def __init__(self, scheme: str) -> None:
        self.name = scheme

    def lane_priority(self, rank: int) -> int:
        return 0

    def queue_arguments(self) -> dict[str, object]:
        return {}

    def queue_depths(self, conn: Connection, queues: list[str]) -> list[QueueDepth]:
        return [QueueDepth(name=q, ready=0, exists=False) for q in queues]

    def unacked_by_queue(
        self, conn: Connection, queues: list[str], management_url: str | None = None
    ) -> dict[str, int] | None:
        return None

    def oldest_task_ids(self, conn: Connection, queues: list[str]) -> dict[str, list[str]]:
        return {}

    def redelivery_at(self, reserved: float, worker_gone: float, options: dict[str, object]) -> float | None:
        return None

    def discover_queues(self, conn: Connection) -> list[str]:
        return []

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
        return []

    def remove_message(
        self, conn: Connection, queue: str, match: Callable[[RawMessage], bool], to: str | None
    ) -> RawMessage | None:
        return None
