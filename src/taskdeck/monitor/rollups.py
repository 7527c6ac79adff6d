"""Rollups (per minute, quarter hour and hour) and cumulative totals of finished runs.

Both count a run by its *contribution* (its final state, minute, name,
queue, latency buckets). When a batch changes a run's contribution — it
became final, or a late event filled its name — the old contribution is
taken out and the new one put in, so duplicates never count twice and
arrival order does not matter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from taskdeck.models import ROLLUPS, Rollup, TaskTotal
from taskdeck.monitor import histogram
from taskdeck.monitor.merge import FINAL
from taskdeck.monitor.subscribers import RunChange, Subscriber

STATE_COLUMN = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked", "REJECTED": "rejected"}


def contribution(row: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What a finished run adds to the rollups; None for a run not finished."""
    if row is None or row["state"] not in FINAL or row["finished_ts"] is None:
        return None
    minute = int(row["finished_ts"] // 60) * 60
    return (
        minute,
        row["name"] or "",
        row["queue"] or "",
        row["state"],
        row["runtime"],
        row["wait_time"],
        row["retries"] or 0,
    )


def deltas(changes: list[RunChange]) -> list[tuple[tuple[Any, ...], int]]:
    """(contribution, +1/-1) for every change that moves a run's contribution."""
    out = []
    for change in changes:
        old, new = contribution(change.before), contribution(change.after)
        if old == new:
            continue
        if old is not None:
            out.append((old, -1))
        if new is not None:
            out.append((new, +1))
    return out


class Rollups(Subscriber):
    """Every rollup table (:data:`~taskdeck.models.ROLLUPS`) from the same moves.

    A move adds to (or takes from) the row of its minute, of its quarter hour
    and of its hour, so each coarse row stays the exact sum of its minutes.
    Per table and batch: one locked read of the rows touched, one upsert.
    """

    name = "rollups"

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def on_changes(self, changes: list[RunChange]) -> None:
        moves = deltas(changes)
        if not moves:
            return
        with transaction.atomic(using=self.using):
            for model in ROLLUPS:
                self._write(model, moves)

    def _write(self, model: type[Rollup], moves: list[tuple[tuple[Any, ...], int]]) -> None:
        start, period = model.period_field, model.period
        keys = {(m[0] - m[0] % period, m[1], m[2]) for m, _ in moves}
        rows = _load(
            model,
            self.using,
            keys,
            lambda r: (int(r.start().timestamp()), r.name, r.queue),
            **{f"{start}__in": {_utc(k[0]) for k in keys}},
            name__in={k[1] for k in keys},
        )
        for (minute, name, queue, state, runtime, wait, retries), sign in moves:
            key = (minute - minute % period, name, queue)
            row = rows.get(key)
            if row is None:
                row = rows[key] = model(**{start: _utc(key[0])}, name=name, queue=queue)
            column = STATE_COLUMN[state]
            setattr(row, column, getattr(row, column) + sign)
            row.retried += sign * retries
            if runtime is not None:
                histogram.add(row.runtime_hist, histogram.bucket(runtime), sign)
            if wait is not None:
                histogram.add(row.wait_hist, histogram.bucket(wait), sign)
        # A row whose only run moved elsewhere (e.g. a late event named it) goes away.
        empty = [r for r in rows.values() if _empty_rollup(r)]
        model.objects.using(self.using).filter(pk__in=[r.pk for r in empty if r.pk]).delete()
        model.objects.using(self.using).bulk_create(
            [r for r in rows.values() if not _empty_rollup(r)],
            update_conflicts=True,
            unique_fields=[start, "name", "queue"],
            update_fields=[*STATE_COLUMN.values(), "retried", "runtime_hist", "wait_hist"],
        )


class Totals(Subscriber):
    """Cumulative counters and Prometheus histograms for ``/metrics``."""

    name = "totals"

    def __init__(self, buckets: Sequence[float], using: str = "default") -> None:
        self.buckets = list(buckets)
        self.using = using

    def on_changes(self, changes: list[RunChange]) -> None:
        moves = deltas(changes)
        if not moves:
            return
        keys = {(m[1], m[2], m[3]) for m, _ in moves}
        size = len(self.buckets) + 1
        with transaction.atomic(using=self.using):
            rows = _load(
                TaskTotal,
                self.using,
                keys,
                lambda r: (r.name, r.queue, r.state),
                name__in={k[0] for k in keys},
            )
            for (_, name, queue, state, runtime, wait, _), sign in moves:
                row = rows.get((name, queue, state))
                if row is None:
                    row = rows[(name, queue, state)] = TaskTotal(name=name, queue=queue, state=state)
                row.count += sign
                for value, attr in ((runtime, "runtime"), (wait, "wait")):
                    if value is None:
                        continue
                    counts = list(getattr(row, f"{attr}_buckets") or []) or [0] * size
                    counts += [0] * (size - len(counts))
                    counts[histogram.le_index(value, self.buckets)] += sign
                    setattr(row, f"{attr}_buckets", counts)
                    setattr(row, f"{attr}_sum", getattr(row, f"{attr}_sum") + sign * value)
            empty = [r for r in rows.values() if r.count == 0]
            TaskTotal.objects.using(self.using).filter(pk__in=[r.pk for r in empty if r.pk]).delete()
            TaskTotal.objects.using(self.using).bulk_create(
                [r for r in rows.values() if r.count != 0],
                update_conflicts=True,
                unique_fields=["name", "queue", "state"],
                update_fields=["count", "runtime_buckets", "runtime_sum", "wait_buckets", "wait_sum"],
            )


def _load(model: Any, using: str, keys: set[Any], key_of: Callable[[Any], Any], **filters: Any) -> dict:
    """Existing rows for ``keys`` (locked), by key; ``filters`` narrow the SELECT."""
    found = model.objects.using(using).select_for_update().filter(**filters)
    return {key_of(row): row for row in found if key_of(row) in keys}


def _utc(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _empty_rollup(row: Rollup) -> bool:
    counts = (row.succeeded, row.failed, row.revoked, row.rejected, row.retried)
    return not any(counts) and not row.runtime_hist and not row.wait_hist
