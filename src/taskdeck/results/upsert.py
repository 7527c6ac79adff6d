"""One statement per stored state: ``INSERT ... ON CONFLICT (task_id) DO UPDATE``.

django-celery-results stores a state with ``get_or_create`` and then
``save()``: a SELECT, an INSERT (in a savepoint) or an UPDATE — two or three
round trips, plus the transaction around them. PostgreSQL (9.5+) and SQLite
(3.24+) both take the same upsert statement, sent in autocommit: one round
trip, one commit, and no race between two writers of the same task id.

The statement goes straight to the driver's cursor, not through Django's
cursor wrapper: on PostgreSQL with server-side parameter binding (Django's
default, client-side binding, quotes each parameter in Python, which cost
more CPU than the rest of storing a state — docs/results.md). Prepared
statements follow the connection's ``prepare_threshold`` (Django's default:
none, so connection poolers keep working). A batch of rows on PostgreSQL (the
write-behind flusher's, the recorder's) is one parameter, the rows as a JSON
document (``SELECT ... FROM json_populate_recordset(...)`` in place of
``VALUES``): one statement text for every batch size, and no value bound
one by one (a batch with a value JSON cannot carry takes ``VALUES``). Errors
are Django's, through ``wrap_database_errors``. Not in
``connection.queries``, even with ``DEBUG``.

What the upsert keeps of the row already there:

- ``date_created`` is never updated (the first state stored sets it);
- ``date_started`` and the extended fields (task name, args, kwargs,
  worker, periodic task name) are kept when the new state does not carry
  them — e.g. a REVOKED stored by a process that has no request — instead of
  being wiped to NULL as a plain ``save()`` would;
- everything else (status, result, traceback, meta, content type, date_done)
  is the new state's, as django-celery-results does;
- except that a SUCCESS is never replaced by a state that is not ready
  (STARTED, RETRY, PENDING, a custom ``update_state``), nor any ready state
  (FAILURE, REVOKED...) by a RETRY: that one is ignored. Celery sends a
  retry's message before it stores the RETRY, so the next attempt can end
  first: a retried task whose next attempt succeeded, or failed for the last
  time, before the previous attempt stored its RETRY, or a task delivered
  twice whose second run stores STARTED, would otherwise turn a finished
  task back into an unfinished one, and ``get()`` would wait forever (seen:
  a task with ``retry_jitter``, whose countdown drew 0 s, ended RETRY after
  its FAILURE). A ready state (SUCCESS, FAILURE, REVOKED) replaces it, as
  django-celery-results does: a task run again under the same id, or
  revoked after it succeeded, stores its later state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import states
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.utils import InterfaceError, OperationalError
from django.utils import timezone

#: Vendors whose upsert syntax is the one built here.
SUPPORTED_VENDORS = ("postgresql", "sqlite")
#: Kept from the existing row when the new state carries NULL.
KEEP_IF_NULL = ("periodic_task_name", "task_name", "task_args", "task_kwargs", "worker", "date_started")
#: Set on insert only.
INSERT_ONLY = ("date_created",)
#: Set to the time of the statement when a row leaves them out.
NOW_IF_MISSING = ("date_created", "date_done")
CONFLICT_FIELD = "task_id"
#: A row in this state is updated only by a state of :data:`READY`.
FINAL = "SUCCESS"
#: Celery's ready states, sorted: the states that replace a :data:`FINAL` one.
READY = tuple(sorted(states.READY_STATES))
#: Fields passed to the driver as they are (strings or None); the others go
#: through ``Field.get_db_prep_save`` (SQLite stores datetimes as text).
PLAIN_TYPES = ("CharField", "TextField")


@dataclass(frozen=True)
class Statement:
    sql: str
    fields: list[Field[Any, Any]]
    prepare: list[bool]  # per field: whether its value needs get_db_prep_save


_statements: dict[tuple[type[Model], str, int, bool], Statement] = {}
#: The statement's "row count" for a batch sent as one JSON document (PostgreSQL).
JSON = -1


def supports_upsert(model: type[Model], using: str | None = None) -> bool:
    """Whether rows of ``model`` are written here on the database ``using`` (else: the stock path)."""
    return connections[using or router.db_for_write(model)].vendor in SUPPORTED_VENDORS


def replaces(before: str, after: str) -> bool:
    """Whether a state ``after`` stored over a stored ``before`` is kept (the rule above)."""
    if before == FINAL:
        return after in READY
    return not (before in READY and after == states.RETRY)


def ship_flag(status: str) -> str:
    """``ARGV`` of :data:`LUA_KEPT` for a state: ``1`` ready, ``r`` RETRY, ``0`` any other."""
    return "1" if status in READY else "r" if status == states.RETRY else "0"


#: Lua: ``kept(current, flag)``, whether the stored row ``current`` (JSON) stays
#: over a state of :func:`ship_flag` ``flag`` (the rule above, for the rows in Redis).
LUA_KEPT = (
    "local READY = {"
    + ", ".join(f"[{state!r}] = true" for state in READY)
    + """}
local function kept(current, flag)
  if not current or flag == '1' then
    return false
  end
  local status = cjson.decode(current)['status']
  return status == 'SUCCESS' or (flag == 'r' and READY[status] == true)
end
"""
)


def upsert(
    model: type[Model], rows: Sequence[Mapping[str, Any]], using: str | None = None, in_order: bool = False
) -> None:
    """Insert or update ``rows`` (field name -> Python value) in one statement.

    ``in_order=True`` (rows that may arrive out of order: the recorder's, read
    by several recorders from one stream) adds a rule: a state that is not
    ready, done (``date_done``) before the state stored, is ignored — a RETRY
    written after its run's FAILURE would otherwise replace it.

    Task ids must be unique within ``rows`` (PostgreSQL refuses to update a
    row twice in one statement); fields a row leaves out take their default.
    On a connection the server closed (a restart, an idle timeout) the
    statement is sent once more on a new connection, unless it runs inside a
    transaction, which must fail as a whole.
    """
    if not rows:
        return
    conn = connections[using or router.db_for_write(model)]
    try:
        _execute(conn, model, rows, in_order)
    except (OperationalError, InterfaceError):
        if conn.in_atomic_block:
            raise
        conn.close()
        _execute(conn, model, rows, in_order)


def _execute(
    conn: BaseDatabaseWrapper, model: type[Model], rows: Sequence[Mapping[str, Any]], in_order: bool = False
) -> None:
    if conn.vendor == "postgresql" and len(rows) > 1:
        document = _document(conn, model, rows)
        if document is not None:
            _send(conn, _statement(conn, model, JSON, in_order).sql, [document])
            return
    statement = _statement(conn, model, len(rows), in_order)
    now = timezone.now()
    params: list[Any] = []
    for row in rows:
        for field, prepare in zip(statement.fields, statement.prepare, strict=True):
            value = _value(row, field, now)
            params.append(field.get_db_prep_save(value, conn) if prepare else value)
    _send(conn, statement.sql, params)


def _value(row: Mapping[str, Any], field: Any, now: datetime) -> Any:
    """``field``'s value in ``row``: its default if absent; now for a missing or empty NOW_IF_MISSING time."""
    name = field.name
    if name in row:
        value = row[name]
        return now if value is None and name in NOW_IF_MISSING else value
    return now if name in NOW_IF_MISSING else field.get_default()


def _document(conn: BaseDatabaseWrapper, model: type[Model], rows: Sequence[Mapping[str, Any]]) -> str | None:
    """A batch as one JSON array of objects keyed by column (datetimes in ISO 8601); None if it has NaN."""
    statement = _statement(conn, model, JSON)
    now = timezone.now()
    items = []
    for row in rows:
        item = {}
        for field in statement.fields:
            value = _value(row, field, now)
            item[field.column] = value.isoformat() if isinstance(value, datetime) else value
        items.append(item)
    try:
        return json.dumps(items, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None  # not JSON: the statement with one parameter per value takes it


def _send(conn: BaseDatabaseWrapper, sql: str, params: list[Any]) -> None:
    conn.validate_no_broken_transaction()
    conn.ensure_connection()
    raw: Any = conn.connection
    with conn.wrap_database_errors:
        if conn.vendor == "postgresql":
            import psycopg

            with psycopg.Cursor(raw) as cursor:  # server-side binding
                cursor.execute(sql, params)
        else:
            raw.execute(sql, params)


def _statement(
    conn: BaseDatabaseWrapper, model: type[Model], count: int, in_order: bool = False
) -> Statement:
    key = (model, conn.vendor, count, in_order)
    if key not in _statements:
        _statements[key] = _build(conn, model, count, in_order)
    return _statements[key]


def _build(conn: BaseDatabaseWrapper, model: type[Model], count: int, in_order: bool = False) -> Statement:
    opts = model._meta
    fields: list[Field[Any, Any]] = [f for f in opts.concrete_fields if not f.primary_key]
    qn = conn.ops.quote_name
    columns = {f.name: qn(str(f.column)) for f in opts.concrete_fields}
    table = qn(opts.db_table)
    mark = "%s" if conn.vendor == "postgresql" else "?"
    row = "(" + ", ".join([mark] * len(fields)) + ")"
    updates = list(_updates(fields, table, qn))
    ready = ", ".join(f"'{state}'" for state in READY)
    names = ", ".join(columns[f.name] for f in fields)
    if count == JSON:
        source = f"SELECT {names} FROM json_populate_recordset(NULL::{table}, %s::json)"
    else:
        source = f"VALUES {', '.join([row] * count)}"
    status = columns["status"]
    sql = (
        f"INSERT INTO {table} ({names}) {source} "
        f"ON CONFLICT ({columns[CONFLICT_FIELD]}) DO UPDATE SET {', '.join(updates)} "
        f"WHERE ({table}.{status} <> '{FINAL}' OR EXCLUDED.{status} IN ({ready}))"
        f" AND NOT ({table}.{status} IN ({ready}) AND EXCLUDED.{status} = '{states.RETRY}')"
    )
    if in_order:
        done = columns["date_done"]
        sql += (
            f" AND (EXCLUDED.{columns['status']} IN ({ready}) OR {table}.{done} IS NULL"
            f" OR EXCLUDED.{done} IS NULL OR EXCLUDED.{done} >= {table}.{done})"
        )
    return Statement(sql, fields, [f.get_internal_type() not in PLAIN_TYPES for f in fields])


def _updates(fields: Iterable[Field[Any, Any]], table: str, qn: Any) -> Iterable[str]:
    for field in fields:
        if field.name == CONFLICT_FIELD or field.name in INSERT_ONLY:
            continue
        column = qn(field.column)
        if field.name in KEEP_IF_NULL:
            yield f"{column} = COALESCE(EXCLUDED.{column}, {table}.{column})"
        else:
            yield f"{column} = EXCLUDED.{column}"
