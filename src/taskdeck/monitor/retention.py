"""Retention: runs, rollups (every period), samples, incidents, workers gone, dead letters; in batches."""

from __future__ import annotations

import logging

from taskdeck.models import (
    ALL_TASKS,
    EVERY_ROLLUP,
    AlertIncident,
    DeadLetter,
    QueueSample,
    Rollup,
    TaskRollup,
    TaskRollupHour,
    TaskRollupQuarter,
    TaskRun,
    Worker,
)
from taskdeck.monitor.subscribers import Every, Subscriber
from taskdeck.querysets import cutoff

logger = logging.getLogger("taskdeck.monitor")
#: How :meth:`Retention.prune` reports each rollup table.
_PER_TASK: dict[type[Rollup], str] = {
    TaskRollup: "rollups",
    TaskRollupQuarter: "quarter_rollups",
    TaskRollupHour: "hour_rollups",
}
KEYS = {**_PER_TASK, **{ALL_TASKS[model]: f"{key}_all" for model, key in _PER_TASK.items()}}


class Retention(Subscriber):
    """Deletes what is older than each retention setting (seconds; None keeps forever)."""

    name = "retention"

    def __init__(
        self,
        *,
        runs: float | None,
        rollups: float | None,
        samples: float | None = None,
        incidents: float | None = None,
        workers: float | None = None,
        deadletters: float | None = None,
        deadletter_bytes: int | None = None,
        interval: float = 300,
        batch: int = 5000,
    ) -> None:
        self.runs, self.rollups, self.samples, self.incidents = runs, rollups, samples, incidents
        self.workers = workers
        self.deadletters, self.deadletter_bytes = deadletters, deadletter_bytes
        self.every = Every(interval)
        self.batch = batch

    def on_tick(self, now: float) -> None:
        if self.every.due(now):
            self.prune()

    def prune(self) -> dict[str, int]:
        done = {}
        if (when := cutoff(self.runs)) is not None:
            # A run is old when it was first seen before the cutoff, finished or not.
            done["runs"] = TaskRun.objects.prune(self.batch, first_seen_at__lt=when)
        if (when := cutoff(self.rollups)) is not None:
            # Every rollup table with the one retention; a row goes once its whole period is past it.
            for model in EVERY_ROLLUP:
                done[KEYS[model]] = model.objects.expired(when).prune(self.batch)
        if (when := cutoff(self.samples)) is not None:
            done["samples"] = QueueSample.objects.prune(self.batch, sampled_at__lt=when)
        if (when := cutoff(self.incidents)) is not None:
            done["incidents"] = AlertIncident.objects.filter(resolved_at__lt=when).delete()[0]
        if (when := cutoff(self.workers)) is not None:
            done["workers"] = Worker.objects.gone(when).prune(self.batch)
        if (when := cutoff(self.deadletters)) is not None:
            done["deadletters"] = DeadLetter.objects.prune(self.batch, created_at__lt=when)
        if self.deadletter_bytes is not None:
            done["deadletters_over_size"] = DeadLetter.objects.prune_beyond(self.deadletter_bytes, self.batch)
        if any(done.values()):
            logger.info("retention pruned %s", done)
        return done
