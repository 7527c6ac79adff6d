"""Django ``TaskResult`` objects read from the results table (django-celery-results' ``TaskResult``).

taskdeck's result backends write one row per task id, as Celery stores its
states. The backend adds the first one itself, as ``PENDING``, before the
message is sent, so a result exists (and says when it was enqueued) from
the moment ``enqueue()`` returns. Celery's states map onto Django's:

========================  ==============
Celery                    Django
========================  ==============
PENDING, RECEIVED, RETRY  ``READY``
STARTED                   ``RUNNING``
SUCCESS                   ``SUCCESSFUL``
FAILURE, REVOKED,         ``FAILED``
REJECTED
========================  ==============
"""

from __future__ import annotations

import ast
import json
from datetime import datetime
from typing import Any

from celery import states
from django.utils.module_loading import import_string

from taskdeck.tasks import compat

#: Celery states (taskdeck's REJECTED included) -> Django's status.
STATUS = {
    states.PENDING: "READY",
    states.RECEIVED: "READY",
    states.RETRY: "READY",
    states.STARTED: "RUNNING",
    states.SUCCESS: "SUCCESSFUL",
    states.FAILURE: "FAILED",
    states.REVOKED: "FAILED",
    "REJECTED": "FAILED",
}


def status_of(celery_state: str) -> Any:
    """Django's status for a Celery state; an unknown custom state counts as running."""
    return compat.TaskResultStatus(STATUS.get(celery_state, "RUNNING"))


def record_enqueued(task_id: str, name: str, args: list[Any], kwargs: dict[str, Any], using: str) -> datetime:
    """Write the PENDING row of a task about to be sent (never over another row); returns its date_created."""
    from django_celery_results.models import TaskResult as Row

    row = Row(
        task_id=task_id,
        task_name=name,
        status=states.PENDING,
        task_args=json.dumps(args),
        task_kwargs=json.dumps(kwargs),
        content_type="application/json",
        content_encoding="utf-8",
    )
    Row.objects.using(using).bulk_create([row], ignore_conflicts=True)
    # Set by the field's auto_now_add as the row was written.
    return row.date_created


def read(backend: Any, result_id: str, using: str) -> Any:
    """The framework's ``TaskResult`` of ``result_id``; ``TaskResultDoesNotExist`` if there is no row.

    With a result backend that stores each state in Redis before the table
    (the record and write-behind backends), the state there is the newer one:
    it is read over the row, so a result is current the moment the task's
    state is stored, not once the recorder has written its row.
    """
    from celery import current_app
    from django_celery_results.models import TaskResult as Row

    row = Row.objects.using(using).filter(task_id=result_id).first()
    stored_row = getattr(current_app.backend, "stored_row", None)
    newer = stored_row(result_id) if stored_row is not None else None
    if newer:
        row = _overlay(row, newer, Row)
    if row is None or not row.task_name:
        raise compat.TaskResultDoesNotExist(f"no result with id {result_id!r}")
    return from_row(backend, row)


def _overlay(row: Any, newer: dict[str, Any], model: Any) -> Any:
    """An unsaved row: ``row`` (if any) merged with the newer state stored in Redis.

    Merged as the upsert will write it (:func:`taskdeck.results.flusher.fold`):
    the row's ``date_created`` (when it was enqueued) and the extended fields
    the state leaves empty are kept.
    """
    from taskdeck.results.flusher import fold

    fields = {f.attname for f in model._meta.concrete_fields} - {"id"}
    states = [newer] if row is None else [{name: getattr(row, name) for name in fields}, newer]
    (merged,) = fold(states)
    return model(**{k: v for k, v in merged.items() if k in fields})


def from_row(backend: Any, row: Any) -> Any:
    task = _task(row.task_name)
    status = status_of(row.status)
    attempts = _retries(row) + 1 if row.worker else 0
    result = compat.new_result(
        task,
        row.task_id,
        status,
        _arguments(row.task_args, list),
        _arguments(row.task_kwargs, dict),
        backend=backend.alias,
        enqueued_at=row.date_created,
        started_at=row.date_started,
        finished_at=row.date_done if status in _FINISHED else None,
        worker_ids=[row.worker] * attempts,
    )
    if status == compat.TaskResultStatus.SUCCESSFUL:
        compat.set_field(result, "_return_value", _decode(row.result))
    elif status == compat.TaskResultStatus.FAILED:
        result.errors.append(
            compat.TaskError(exception_class_path=_exception_path(row), traceback=row.traceback or "")
        )
    return result


_FINISHED = {"SUCCESSFUL", "FAILED"}


def _retries(row: Any) -> int:
    """Celery's retry count of the stored state, which taskdeck's backends keep under their own meta key."""
    from taskdeck.results.backend import META_KEY

    try:
        meta = _decode(row.meta)
    except ValueError:
        return 0
    meta = meta if isinstance(meta, dict) else {}
    own = meta.get(META_KEY)
    if not isinstance(own, dict):
        own = {}
    retries = own.get("retries", meta.get("retries"))
    return retries if isinstance(retries, int) and not isinstance(retries, bool) and retries > 0 else 0


def _task(path: str) -> Any:
    try:
        task = import_string(path)
    except ImportError as exc:
        raise compat.TaskResultDoesNotExist(f"the result's task {path!r} cannot be imported: {exc}") from exc
    if not isinstance(task, compat.Task):
        raise compat.TaskResultDoesNotExist(f"the result's task {path!r} is not a Django task")
    return task


def _decode(text: str | None) -> Any:
    if not text:
        return None
    return json.loads(text)


def _arguments(text: str | None, kind: type) -> Any:
    """Arguments as stored: JSON (the PENDING row), or Celery's repr of them encoded as JSON (worker rows)."""
    value = _decode(text)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return kind()
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, kind) else kind()


def _exception_path(row: Any) -> str:
    """``module.Class`` of the stored exception (Celery's JSON form: exc_module and exc_type)."""
    try:
        value = _decode(row.result)
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("exc_type"):
        module = value.get("exc_module") or "builtins"
        return f"{module}.{value['exc_type']}"
    if row.status == states.REVOKED:
        return "celery.exceptions.TaskRevokedError"
    return "builtins.Exception"
