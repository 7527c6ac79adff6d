"""Rollups (per minute, quarter hour and hour) and cumulative totals of finished runs.

Both count a run by its *contribution* (its final state, minute, name,
queue, latency buckets). When a batch changes a run's contribution — it
became final, or a late event filled its name — the old contribution is
taken out and the new one put in, so duplicates never count twice and
arrival order does not matter.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, transaction

from taskdeck.models import EVERY_ROLLUP, ROLLUPS, Rollup, TaskTotal
from taskdeck.monitor import histogram
from taskdeck.monitor.merge import FINAL
from taskdeck.monitor.subscribers import RunChange, Subscriber

STATE_COLUMN = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked", "REJECTED": "rejected"}
#: Retries one run adds to its rollups' ``retried`` count at most. A run's own row keeps its count; a
#: run claiming 2,147,483,647 retries (an event or record anyone can send) overflowed the column, and
#: the database refused every retried run of that hour's rollups after it.
MAX_RETRIES_COUNTED = 10_000


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
        min(row["retries"] or 0, MAX_RETRIES_COUNTED),
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


def moves_for(
    model: type[Rollup], moves: list[tuple[tuple[Any, ...], int]]
) -> list[tuple[tuple[Any, ...], int]]:
    """``moves`` as ``model`` counts them: in a table of every task, without their name and queue."""
    if model in ROLLUPS:
        return moves
    return [((m[0], "", "", *m[3:]), sign) for m, sign in moves]


class Rollups(Subscriber):
    """Every rollup table (:data:`~taskdeck.models.EVERY_ROLLUP`) from the same moves.

    A move adds to (or takes from) the row of its minute, of its quarter hour
    and of its hour, so each coarse row stays the exact sum of its minutes;
    and to the rows of every task of the same periods, so each of those stays
    the exact sum of its period's rows per task name and queue.
    Per table and batch on PostgreSQL: one statement, the batch's sums per row
    as a JSON document, added to the rows there by ``ON CONFLICT DO UPDATE``
    (histograms merged by bucket), and a DELETE of the rows it left empty,
    only when there are such rows. Other databases: one locked read of the
    rows touched, the sums in Python, one upsert.
    """

    name = "rollups"

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def on_changes(self, changes: list[RunChange]) -> None:
        moves = deltas(changes)
        if not moves:
            return
        with transaction.atomic(using=self.using):
            for model in EVERY_ROLLUP:
                these = moves_for(model, moves)
                if connections[self.using].vendor == "postgresql":
                    _add_in_sql(model, these, self.using)
                else:
                    self._write(model, these)

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


def sums(model: type[Rollup], moves: list[tuple[tuple[Any, ...], int]]) -> list[dict[str, Any]]:
    """What ``moves`` add to each row of ``model`` they touch (counts and histograms may be negative)."""
    period = model.period
    rows: dict[tuple[int, str, str], dict[str, Any]] = {}
    for (minute, name, queue, state, runtime, wait, retries), sign in moves:
        key = (minute - minute % period, name, queue)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "start": _utc(key[0]).isoformat(),
                "name": name,
                "queue": queue,
                **dict.fromkeys(STATE_COLUMN.values(), 0),
                "retried": 0,
                "runtime_hist": {},
                "wait_hist": {},
            }
        row[STATE_COLUMN[state]] += sign
        row["retried"] += sign * retries
        for value, hist in ((runtime, "runtime_hist"), (wait, "wait_hist")):
            if value is not None:
                bucket = histogram.bucket(value)
                row[hist][bucket] = row[hist].get(bucket, 0) + sign
    for row in rows.values():
        for hist in ("runtime_hist", "wait_hist"):
            row[hist] = {k: v for k, v in row[hist].items() if v}
    return list(rows.values())


#: A histogram column (``{bucket: count}``) plus the one the statement brings, buckets left at 0 dropped.
_MERGE_HIST = """COALESCE((
  SELECT jsonb_object_agg(k, total) FROM (
    SELECT k, SUM(v::bigint) AS total
    FROM (
      SELECT * FROM jsonb_each_text(r.{col}) UNION ALL SELECT * FROM jsonb_each_text(EXCLUDED.{col})
    ) AS u(k, v)
    GROUP BY k
  ) AS g WHERE total > 0), '{{}}'::jsonb)"""
#: A histogram without its buckets at 0 or below.
_CLEAN_HIST = """COALESCE((
  SELECT jsonb_object_agg(k, v::bigint) FROM jsonb_each_text({col}) AS e(k, v) WHERE v::bigint > 0
), '{{}}'::jsonb)"""
_COUNTS = (*STATE_COLUMN.values(), "retried")
_HISTS = ("runtime_hist", "wait_hist")
_sql: dict[tuple[type[Rollup], str], tuple[str, str, str]] = {}


def _add_in_sql(model: type[Rollup], moves: list[tuple[tuple[Any, ...], int]], using: str) -> None:
    """Add the sums of ``moves`` to ``model``'s rows in one statement; tidy the rows it left empty.

    A row the statement updates gets its histograms merged and cleaned in
    the statement. A row it inserts holds the batch's sums as they are: a
    bucket taken out of a row that was never written (only a batch that
    contradicts the table does that) is cleaned by a second statement, as
    the rows left with nothing are deleted by a third; both run only when
    the first reports such rows.
    """
    upsert, clean, delete = _statements(model, using)
    document = json.dumps(sums(model, moves), separators=(",", ":"))
    with connections[using].cursor() as cursor:
        cursor.execute(upsert, [document])
        found = cursor.fetchall()
        dirty = [pk for pk, _, is_dirty in found if is_dirty]
        if dirty:
            cursor.execute(clean, [dirty])
        if found:
            cursor.execute(delete, [[pk for pk, _, _ in found]])


def _statements(model: type[Rollup], using: str) -> tuple[str, str, str]:
    key = (model, using)
    if key not in _sql:
        conn = connections[using]
        qn = conn.ops.quote_name
        table = qn(model._meta.db_table)
        start = qn(str(getattr(model._meta.get_field(model.period_field), "column", model.period_field)))
        counts = ", ".join(qn(c) for c in _COUNTS)
        upsert = (
            f"INSERT INTO {table} AS r ({start}, name, queue, {counts}, runtime_hist, wait_hist) "
            f"SELECT d.start, d.name, d.queue, {', '.join(f'd.{c}' for c in _COUNTS)}, "
            "d.runtime_hist, d.wait_hist "
            "FROM json_to_recordset(%s::json) AS d(start timestamptz, name text, queue text, "
            f"{', '.join(f'{c} integer' for c in _COUNTS)}, runtime_hist jsonb, wait_hist jsonb) "
            f"ON CONFLICT ({start}, name, queue) DO UPDATE SET "
            f"{', '.join(f'{c} = r.{c} + EXCLUDED.{c}' for c in _COUNTS)}, "
            f"{', '.join(f'{h} = {_MERGE_HIST.format(col=h)}' for h in _HISTS)} "
            f"RETURNING r.id, {counts}, runtime_hist, wait_hist"
        )
        empty = f"{' AND '.join(f'{c} = 0' for c in _COUNTS)}"
        nonpositive = " OR ".join(
            f"EXISTS (SELECT 1 FROM jsonb_each_text({h}) AS e(k, v) WHERE v::bigint <= 0)" for h in _HISTS
        )
        # The rows that may need tidying: all counts 0 (a move emptied them, e.g. a late
        # event named the run: it moved to another name), or a bucket at 0 or below.
        upsert = (
            f"WITH written AS ({upsert}) SELECT id, {empty}, {nonpositive} FROM written "
            f"WHERE ({empty}) OR {nonpositive}"
        )
        clean = (
            f"UPDATE {table} SET {', '.join(f'{h} = {_CLEAN_HIST.format(col=h)}' for h in _HISTS)} "
            "WHERE id = ANY(%s)"
        )
        delete = (
            f"DELETE FROM {table} WHERE id = ANY(%s) AND {empty} "
            "AND runtime_hist = '{}'::jsonb AND wait_hist = '{}'::jsonb"
        )
        _sql[key] = (upsert, clean, delete)
    return _sql[key]


class Totals(Subscriber):
    """Cumulative counters and Prometheus histograms for ``/metrics``.

    On PostgreSQL, as the rollups: one statement per batch adds the batch's
    sums (bucket arrays element by element); elsewhere, or when a latency is
    not a number JSON can carry, a locked read, the sums in Python, an upsert.
    """

    name = "totals"

    def __init__(self, buckets: Sequence[float], using: str = "default") -> None:
        self.buckets = list(buckets)
        self.using = using

    def on_changes(self, changes: list[RunChange]) -> None:
        moves = deltas(changes)
        if not moves:
            return
        if connections[self.using].vendor == "postgresql":
            try:
                document = json.dumps(self.sums(moves), separators=(",", ":"), allow_nan=False)
            except ValueError:
                pass  # JSON has no NaN: the rows are read and written as other databases do it
            else:
                with transaction.atomic(using=self.using):
                    self._add_in_sql(document)
                return
        self._write(moves)

    def _write(self, moves: list[tuple[tuple[Any, ...], int]]) -> None:
        """The totals ``moves`` touch read (locked), added to in Python, written back."""
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

    def sums(self, moves: list[tuple[tuple[Any, ...], int]]) -> list[dict[str, Any]]:
        """What ``moves`` add to each total; a latency's buckets None when no move has that latency."""
        size = len(self.buckets) + 1
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for (_, name, queue, state, runtime, wait, _), sign in moves:
            row = rows.get((name, queue, state))
            if row is None:
                row = rows[(name, queue, state)] = {
                    "name": name,
                    "queue": queue,
                    "state": state,
                    "count": 0,
                    "runtime_buckets": None,
                    "runtime_sum": 0.0,
                    "wait_buckets": None,
                    "wait_sum": 0.0,
                }
            row["count"] += sign
            for value, attr in ((runtime, "runtime"), (wait, "wait")):
                if value is None:
                    continue
                counts = row[f"{attr}_buckets"] or [0] * size
                counts[histogram.le_index(value, self.buckets)] += sign
                row[f"{attr}_buckets"] = counts
                row[f"{attr}_sum"] += sign * value
        return list(rows.values())

    def _add_in_sql(self, document: str) -> None:
        """One statement adds the batch's sums (:meth:`sums`); the totals it left at 0 are deleted."""
        with connections[self.using].cursor() as cursor:
            cursor.execute(_totals_sql(self.using), [document])
            zero = [pk for (pk,) in cursor.fetchall()]
            if zero:
                cursor.execute(
                    f"DELETE FROM {_table(TaskTotal, self.using)} WHERE id = ANY(%s) AND count = 0", [zero]
                )


#: Two JSON arrays of counts added element by element (the longer one's length). The
#: statement's is [] when the batch had no such latency: the column stays as it is.
_ADD_BUCKETS = """COALESCE((
  SELECT jsonb_agg(COALESCE(a.v::bigint, 0) + COALESCE(b.v::bigint, 0) ORDER BY COALESCE(a.i, b.i))
  FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(t.{col}) = 'array' THEN t.{col} ELSE '[]' END)
    WITH ORDINALITY AS a(v, i)
  FULL JOIN jsonb_array_elements_text(EXCLUDED.{col}) WITH ORDINALITY AS b(v, i) ON a.i = b.i
), '[]'::jsonb)"""
_totals: dict[str, str] = {}


def _table(model: Any, using: str) -> str:
    return str(connections[using].ops.quote_name(model._meta.db_table))


def _totals_sql(using: str) -> str:
    if using not in _totals:
        table = _table(TaskTotal, using)
        buckets = ("runtime_buckets", "wait_buckets")
        _totals[using] = (
            f"WITH written AS (INSERT INTO {table} AS t "
            "(name, queue, state, count, runtime_buckets, runtime_sum, wait_buckets, wait_sum) "
            "SELECT d.name, d.queue, d.state, d.count, COALESCE(d.runtime_buckets, '[]'::jsonb), "
            "d.runtime_sum, COALESCE(d.wait_buckets, '[]'::jsonb), d.wait_sum "
            "FROM json_to_recordset(%s::json) AS d(name text, queue text, state text, count bigint, "
            "runtime_buckets jsonb, runtime_sum double precision, "
            "wait_buckets jsonb, wait_sum double precision) "
            "ON CONFLICT (name, queue, state) DO UPDATE SET count = t.count + EXCLUDED.count, "
            "runtime_sum = t.runtime_sum + EXCLUDED.runtime_sum, wait_sum = t.wait_sum + EXCLUDED.wait_sum, "
            f"{', '.join(f'{c} = {_ADD_BUCKETS.format(col=c)}' for c in buckets)} "
            "RETURNING t.id, t.count) SELECT id FROM written WHERE count = 0"
        )
    return _totals[using]


def _load(model: Any, using: str, keys: set[Any], key_of: Callable[[Any], Any], **filters: Any) -> dict:
    """Existing rows for ``keys`` (locked), by key; ``filters`` narrow the SELECT."""
    found = model.objects.using(using).select_for_update().filter(**filters)
    return {key_of(row): row for row in found if key_of(row) in keys}


def _utc(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _empty_rollup(row: Rollup) -> bool:
    counts = (row.succeeded, row.failed, row.revoked, row.rejected, row.retried)
    return not any(counts) and not row.runtime_hist and not row.wait_hist
