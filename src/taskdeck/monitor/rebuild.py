"""Rebuild the quarter-hour and hour rollups, and those of every task, from the minute rows
(``taskdeck rebuild-rollups``).

A coarse row is the sum of the minute rows of its period, a row of every
task the sum of its period's rows of every name and queue: the recorder
writes every table from the same runs. Migration ``0003_coarser_rollups``
filled the coarse tables from the minutes recorded before it; a recorder of
an earlier version left running during or after the migration wrote minute
rows only, and the charts of 24 hours and more (and ``GET api/stats`` over
such windows) miss those runs; one of a version before the tables of every
task (migration ``0013_rollups_of_every_task``) left them out of the charts
of every task. This computes the coarse rows and the rows of every task of
each hour again from its minute rows.

One hour per transaction, under the recorder's write lock
(:func:`~taskdeck.monitor.runs.lock_writers`): a running recorder waits for
the hour being rebuilt (milliseconds), then adds its runs to the rebuilt
rows, so nothing is counted twice or lost. The hour of the oldest minute row
is left as it is: retention may have pruned its first minutes already, while
its hour row keeps them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.db.models import Max, Min

from taskdeck.models import ALL_TASKS, TaskRollup, TaskRollupHour, TaskRollupQuarter
from taskdeck.monitor.runs import lock_writers

COUNTS = ("succeeded", "failed", "revoked", "rejected", "retried")
HOUR = 3600


def rebuild_coarse(since: dt.datetime | None = None, using: str = "default") -> dict[str, int]:
    """Recompute every quarter-hour and hour row, and every row of every task, from ``since``
    (default: all but the oldest hour).

    Returns the hours rebuilt and the rows written per table (``all`` for those of every task).
    """
    bounds = TaskRollup.objects.using(using).aggregate(first=Min("minute"), last=Max("minute"))
    done = {"hours": 0, "quarter": 0, "hour": 0, "all": 0}
    if bounds["first"] is None:
        return done
    first = _hour(bounds["first"]) + HOUR
    if since is not None:
        first = max(first, _hour(since))
    for start in range(first, _hour(bounds["last"]) + HOUR, HOUR):
        written = _rebuild_hour(start, using)
        done["hours"] += 1
        done["quarter"] += written[TaskRollupQuarter]
        done["hour"] += written[TaskRollupHour]
        done["all"] += sum(written[model] for model in ALL_TASKS.values())
    return done


def _rebuild_hour(start: int, using: str) -> dict[Any, int]:
    lo, hi = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (start, start + HOUR))
    with transaction.atomic(using=using):
        lock_writers(using)
        minutes = TaskRollup.objects.using(using).filter(minute__gte=lo, minute__lt=hi)
        sums: dict[Any, dict[tuple[int, str, str], Any]] = {
            model: {} for model in (TaskRollupQuarter, TaskRollupHour, *ALL_TASKS.values())
        }
        every_task = set(ALL_TASKS.values())
        for row in minutes.iterator(chunk_size=2000):
            stamp = int(row.minute.timestamp())
            for model, rows in sums.items():
                period = stamp - stamp % model.period
                name, queue = ("", "") if model in every_task else (row.name, row.queue)
                acc = rows.get((period, name, queue))
                if acc is None:
                    acc = rows[(period, name, queue)] = model(
                        **{model.period_field: dt.datetime.fromtimestamp(period, dt.UTC)},
                        name=name,
                        queue=queue,
                        runtime_hist={},
                        wait_hist={},
                    )
                for count in COUNTS:
                    setattr(acc, count, getattr(acc, count) + getattr(row, count))
                for hist in ("runtime_hist", "wait_hist"):
                    total = getattr(acc, hist)
                    for key, value in (getattr(row, hist) or {}).items():
                        total[key] = total.get(key, 0) + value
        for model, rows in sums.items():
            model.objects.using(using).filter(
                **{f"{model.period_field}__gte": lo, f"{model.period_field}__lt": hi}
            ).delete()
            model.objects.using(using).bulk_create(rows.values(), batch_size=1000)
    return {model: len(rows) for model, rows in sums.items()}


def _hour(value: dt.datetime) -> int:
    stamp = int(value.timestamp())
    return stamp - stamp % HOUR
