"""Task runs: fold a batch of facts into :class:`~taskdeck.models.TaskRun` rows, one upsert.

One SELECT of the rows the batch touches, the merge of :mod:`merge` in
memory, one ``INSERT ... ON CONFLICT (task_id) DO UPDATE`` of the rows that
changed. Only this batch is ever in memory.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.db import connections, transaction

from taskdeck.models import TaskRun
from taskdeck.monitor import merge
from taskdeck.monitor.merge import RunFact
from taskdeck.monitor.subscribers import RunChange

#: Row keys stored as datetimes in the model: row key → model field.
TIMESTAMPS = {
    "first_seen_ts": "first_seen_at",
    "sent_ts": "sent_at",
    "received_ts": "received_at",
    "started_ts": "started_at",
    "finished_ts": "finished_at",
}
PLAIN = (
    "task_id",
    "state",
    "state_at",
    "reconstructed",
    "retries",
    "priority",
    "wait_time",
    "runtime",
    *merge.IDENTITY,
    *(name for name in merge.ATTEMPT if name != "runtime"),
    "payload",
    "attempts",
)
#: The PostgreSQL advisory lock every transaction that writes runs holds (see :func:`lock_writers`).
WRITERS_LOCK = 0x7464_7275  # "tdru"
UPDATE_FIELDS = [name for name in PLAIN if name != "task_id"] + list(TIMESTAMPS.values()) + ["updated_at"]


def to_datetime(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def to_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else round(value.timestamp(), 6)


def row_from_model(values: dict[str, Any]) -> dict[str, Any]:
    row = {name: values[name] for name in PLAIN}
    for key, field in TIMESTAMPS.items():
        row[key] = to_ts(values[field])
    return row


def model_from_row(row: dict[str, Any]) -> TaskRun:
    fields = {name: row[name] for name in PLAIN}
    for key, field in TIMESTAMPS.items():
        fields[field] = to_datetime(row[key])
    for name in (*merge.IDENTITY, "worker", "result", "exception", "traceback", "payload"):
        fields[name] = fields[name] or ""
    fields["attempts"] = fields["attempts"] or []
    return TaskRun(**fields)


def lock_writers(using: str = "default") -> None:
    """Wait until no other transaction writes runs, then hold that right until this one ends.

    Two recorders (one restarted on another host before the old one
    stopped) both receive every event. A new run has no row to lock: both
    would read it as new, both write it, and both add it to the rollups and
    totals. Taken first in each batch's transaction, this lock makes the
    second recorder read what the first committed; the merge is idempotent,
    so its batch then changes nothing and moves no count. On SQLite, writing
    transactions are serialised by the database itself (a stale one fails
    and its batch is retried).
    """
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [WRITERS_LOCK])


class RunWriter:
    """Applies facts to task runs and reports what changed."""

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def apply(self, facts: list[RunFact]) -> list[RunChange]:
        if not facts:
            return []
        by_task: dict[str, list[RunFact]] = defaultdict(list)
        for fact in facts:
            by_task[fact.task_id].append(fact)
        with transaction.atomic(using=self.using):
            existing = {
                values["task_id"]: row_from_model(values)
                for values in TaskRun.objects.using(self.using)
                .select_for_update()
                .filter(task_id__in=list(by_task))
                .values(*PLAIN, *TIMESTAMPS.values())
            }
            changes = []
            for task_id, task_facts in by_task.items():
                before = existing.get(task_id)
                after = merge.fold(before, task_facts)
                if after != before:
                    changes.append(RunChange(before, after))
            if changes:
                TaskRun.objects.using(self.using).bulk_create(
                    [model_from_row(change.after) for change in changes],
                    update_conflicts=True,
                    unique_fields=["task_id"],
                    update_fields=UPDATE_FIELDS,
                )
        return changes
