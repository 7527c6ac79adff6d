"""The recorder's one extension point: a subscriber sees every batch.

Each hook is a documented no-op; a subscriber overrides the ones it needs.
The recorder calls them in order on its one apply thread, so a subscriber
needs no locking. Collaborators (settings, the Celery app, a clock) come in
through the constructor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunChange:
    """A task run before and after one batch (rows as in :mod:`taskdeck.monitor.merge`)."""

    before: dict[str, Any] | None
    after: dict[str, Any]


class Subscriber:
    #: Short name, used in logs and in the recorder's error reports.
    name = "subscriber"

    def on_start(self, now: float) -> None:
        """Called once before the first batch."""

    def on_events(self, events: list[dict[str, Any]]) -> None:
        """Raw Celery events of this batch (task and worker events, in arrival order)."""

    def on_changes(self, changes: list[RunChange]) -> None:
        """Task runs whose row changed in this batch."""

    def on_tick(self, now: float) -> None:
        """Called after every batch and at least every flush interval, even when idle."""

    def on_stop(self) -> None:
        """Called once when the recorder stops."""


class Every:
    """Helper for ``on_tick``: true once per ``interval`` seconds (and on the first call)."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self._next: float | None = None

    def due(self, now: float) -> bool:
        if self.interval is None:
            return False
        if self._next is None or now >= self._next:
            self._next = now + float(self.interval)
            return True
        return False
