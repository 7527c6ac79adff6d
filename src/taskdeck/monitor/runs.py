"""Task runs: fold a batch of facts into :class:`~taskdeck.models.TaskRun` rows, one upsert.

One SELECT of the rows the batch touches, the merge of :mod:`merge` in
memory, one ``INSERT ... ON CONFLICT (task_id) DO UPDATE`` of the rows that
changed. Only this batch is ever in memory.

On PostgreSQL the upsert is one statement whose one parameter is the batch as
a JSON document (``INSERT ... SELECT ... FROM json_populate_recordset(...)``,
the same text whatever the batch's size): Django's ``bulk_create`` builds
model instances and quotes every value in Python, which was half of the
recorder's CPU, and arrays per column (``unnest``) cost psycopg a Python call
per value (docs/benchmarks.md). Other databases take ``bulk_create``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.utils import timezone

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
                write([change.after for change in changes], self.using)
        return changes


#: Row keys whose empty value (None) is stored as the model stores it: "" or [].
BLANK_TEXT = (*merge.IDENTITY, "worker", "result", "exception", "traceback", "payload")


def write(rows: list[dict[str, Any]], using: str = "default") -> None:
    """Insert or update the run ``rows`` (task ids unique), as ``bulk_create(update_conflicts=True)``."""
    conn = connections[using]
    document = _document(conn, rows) if conn.vendor == "postgresql" else None
    if document is None:
        TaskRun.objects.using(using).bulk_create(
            [model_from_row(row) for row in rows],
            update_conflicts=True,
            unique_fields=["task_id"],
            update_fields=UPDATE_FIELDS,
        )
        return
    import psycopg

    conn.validate_no_broken_transaction()
    conn.ensure_connection()
    with conn.wrap_database_errors, psycopg.Cursor(conn.connection) as cursor:  # server-side binding
        cursor.execute(_statement(conn).sql, [document])


def _document(conn: BaseDatabaseWrapper, rows: list[dict[str, Any]]) -> str | None:
    """The rows as one JSON array of objects keyed by column; None when one holds NaN or infinity."""
    statement = _statement(conn)
    now = timezone.now().isoformat()
    items = []
    for row in rows:
        item = dict(statement.defaults)
        for name, column, convert in statement.plain:
            item[column] = convert(row[name])
        for key, column in statement.timestamps:
            ts = row[key]
            item[column] = None if ts is None else to_datetime(ts).isoformat()  # type: ignore[union-attr]
        item[statement.updated_at] = now
        items.append(item)
    try:
        return json.dumps(items, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return None  # JSON has no NaN: bulk_create writes what PostgreSQL itself takes


@dataclass(frozen=True)
class _Statement:
    sql: str
    plain: list[tuple[str, str, Callable[[Any], Any]]]  # row key, column, Python value -> JSON value
    timestamps: list[tuple[str, str]]  # row key (epoch seconds), column
    updated_at: str
    defaults: dict[str, Any]  # columns written by other parts (liveness): their default on insert


_statements: dict[str, _Statement] = {}


def _statement(conn: BaseDatabaseWrapper) -> _Statement:
    if conn.alias not in _statements:
        _statements[conn.alias] = _build(conn)
    return _statements[conn.alias]


def _build(conn: BaseDatabaseWrapper) -> _Statement:
    """``INSERT ... SELECT ... FROM json_populate_recordset(NULL::<table>, %s::json) ON CONFLICT ...``"""
    opts = TaskRun._meta
    fields: list[Field[Any, Any]] = [f for f in opts.concrete_fields if not f.primary_key]
    qn = conn.ops.quote_name
    names = {f.name: qn(str(f.column)) for f in fields}
    table = qn(opts.db_table)
    columns = ", ".join(names.values())
    updates = ", ".join(f"{names[n]} = EXCLUDED.{names[n]}" for n in UPDATE_FIELDS)
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT {columns} "
        f"FROM json_populate_recordset(NULL::{table}, %s::json) "
        f"ON CONFLICT ({names['task_id']}) DO UPDATE SET {updates}"
    )
    column = {f.name: str(f.column) for f in fields}
    return _Statement(
        sql,
        [(f.name, column[f.name], _converter(f)) for f in fields if f.name in PLAIN],
        [(key, column[name]) for key, name in TIMESTAMPS.items()],
        column["updated_at"],
        {
            column[f.name]: f.get_default()
            for f in fields
            if f.name not in PLAIN and f.name not in TIMESTAMPS.values() and f.name != "updated_at"
        },
    )


def _converter(field: Field[Any, Any]) -> Callable[[Any], Any]:
    """Python value -> the JSON value PostgreSQL reads into the column (as the model would store it)."""
    kind = field.get_internal_type()
    if field.name in BLANK_TEXT:
        return lambda value: value or ""
    if kind == "JSONField":
        return lambda value: value or []
    if kind == "FloatField":
        return lambda value: None if value is None else float(value)
    if kind == "IntegerField":
        return lambda value: None if value is None else int(value)
    if kind == "BooleanField":
        return lambda value: None if value is None else bool(value)
    return lambda value: value
