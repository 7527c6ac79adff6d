"""One statement per stored state: ``INSERT ... ON CONFLICT (task_id) DO UPDATE``.

django-celery-results stores a state with ``get_or_create`` and then
``save()``: a SELECT, an INSERT (in a savepoint) or an UPDATE — two or three
round trips, plus the transaction around them. PostgreSQL (9.5+) and SQLite
(3.24+) both take the same upsert statement, sent in autocommit: one round
trip, one commit, and no race between two writers of the same task id.

What the upsert keeps of the row already there:

- ``date_created`` is never updated (the first state stored sets it);
- ``date_started`` and the extended fields (task name, args, kwargs,
  worker, periodic task name) are kept when the new state does not carry
  them — e.g. a REVOKED stored by a process that has no request — instead of
  being wiped to NULL as a plain ``save()`` would;
- everything else (status, result, traceback, meta, content type, date_done)
  is the new state's, as django-celery-results does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
CONFLICT_FIELD = "task_id"

_statements: dict[tuple[type[Model], str, int], tuple[str, list[Field[Any, Any]]]] = {}


def supports_upsert(model: type[Model], using: str | None = None) -> bool:
    """Whether rows of ``model`` are written here on the database ``using`` (else: the stock path)."""
    return connections[using or router.db_for_write(model)].vendor in SUPPORTED_VENDORS


def upsert(model: type[Model], rows: Sequence[Mapping[str, Any]], using: str | None = None) -> None:
    """Insert or update ``rows`` (field name -> Python value) in one statement.

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
        _execute(conn, model, rows)
    except (OperationalError, InterfaceError):
        if conn.in_atomic_block:
            raise
        conn.close()
        _execute(conn, model, rows)


def _execute(conn: BaseDatabaseWrapper, model: type[Model], rows: Sequence[Mapping[str, Any]]) -> None:
    sql, fields = _statement(conn, model, len(rows))
    now = timezone.now()
    params: list[Any] = []
    for row in rows:
        for field in fields:
            if field.name in ("date_created", "date_done"):
                value = row.get(field.name) or now
            elif field.name in row:
                value = row[field.name]
            else:
                value = field.get_default()
            params.append(field.get_db_prep_save(value, conn))
    with conn.cursor() as cursor:
        cursor.execute(sql, params)


def _statement(
    conn: BaseDatabaseWrapper, model: type[Model], count: int
) -> tuple[str, list[Field[Any, Any]]]:
    key = (model, conn.vendor, count)
    if key not in _statements:
        _statements[key] = _build(conn, model, count)
    return _statements[key]


def _build(conn: BaseDatabaseWrapper, model: type[Model], count: int) -> tuple[str, list[Field[Any, Any]]]:
    opts = model._meta
    fields: list[Field[Any, Any]] = [f for f in opts.concrete_fields if not f.primary_key]
    qn = conn.ops.quote_name
    table = qn(opts.db_table)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    updates = list(_updates(fields, table, qn))
    sql = (
        f"INSERT INTO {table} ({', '.join(qn(f.column) for f in fields)}) "
        f"VALUES {', '.join([row] * count)} "
        f"ON CONFLICT ({qn(opts.get_field(CONFLICT_FIELD).column)}) DO UPDATE SET {', '.join(updates)}"
    )
    return sql, fields


def _updates(fields: Iterable[Field[Any, Any]], table: str, qn: Any) -> Iterable[str]:
    for field in fields:
        if field.name == CONFLICT_FIELD or field.name in INSERT_ONLY:
            continue
        column = qn(field.column)
        if field.name in KEEP_IF_NULL:
            yield f"{column} = COALESCE(EXCLUDED.{column}, {table}.{column})"
        else:
            yield f"{column} = EXCLUDED.{column}"
