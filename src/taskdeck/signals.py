"""Celery signal handlers taskdeck installs, connected once from ``apps.ready``."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from taskdeck.errors import first_line

logger = logging.getLogger("taskdeck")


def connect() -> None:
    from taskdeck import rejections
    from taskdeck.results import flusher, record

    signals.task_unknown.connect(_record_unknown_task, dispatch_uid="taskdeck.task_unknown")
    # Refused messages (pickle, unknown content types, non-task messages) leave a row.
    signals.task_rejected.connect(rejections.on_task_rejected, dispatch_uid="taskdeck.task_rejected")
    signals.task_internal_error.connect(_name_internal_error, dispatch_uid="taskdeck.task_internal_error")
    signals.worker_init.connect(_refuse_bad_settings, dispatch_uid="taskdeck.worker_init")
    flusher.connect()
    record.connect()


def _record_unknown_task(*, name: str, id: str, message: Any, **kwargs: Any) -> None:
    """Name the task on its FAILURE row so an unknown task is findable, not dropped, and dead-letter it.

    Celery already stores ``NotRegistered`` for the id; it leaves the task
    name empty, so the row could not be found by name.
    """
    from django_celery_results.models import TaskResult

    from taskdeck.rejections import dead_letter

    # Kept raw, so it can be requeued once the code that defines it is deployed.
    dead_letter(kwargs.get("sender"), message, None, f"task {name!r} is not registered on this worker", id)
    queue = (getattr(message, "delivery_info", None) or {}).get("routing_key")
    logger.error(
        "task %s[%s] from queue %r is not registered on this worker: stored as FAILURE "
        "(NotRegistered). Deploy the code that defines it, or fix the name.",
        name,
        id,
        queue,
    )
    backend: Any = getattr(getattr(kwargs.get("sender"), "app", None), "backend", None)
    if hasattr(backend, "name_task"):
        backend.name_task(id, name)  # taskdeck's backends: the write-behind one has no row yet
    else:
        TaskResult.objects.filter(task_id=id).update(task_name=name)


def _name_internal_error(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **kwargs: Any
) -> None:
    """Name the task when Celery fails outside its code, most often storing its state.

    Celery's own report of such an error ("Exception raised outside body",
    "Pool callback raised exception") does not say which task it was; with
    the database down, a task whose result could not be stored would leave
    no trace of which one it was.
    """
    line = first_line(exception)
    logger.error(
        "task %s[%s]: error outside the task's code, %s: %s. If it came from storing the task's "
        "state (the database or result backend did not answer), that state is not stored; "
        "see docs/reliability.md",
        getattr(sender, "name", None) or "?",
        task_id,
        type(exception).__name__,
        line,
    )


def _refuse_bad_settings(sender: Any = None, **kwargs: Any) -> None:
    """A worker does not start on settings taskdeck's system checks call errors.

    Celery's Django fix-up runs the system checks at start-up but ignores what
    they find, so a worker with a route to an unknown lane would start and
    send that lane's tasks nowhere. The message is the checks' own, naming
    the setting (``taskdeck.E001`` ... ``E006``). ``SystemExit``: Celery logs and
    swallows any other exception raised by a signal handler. Celery's own
    ``CELERY_SKIP_CHECKS`` environment variable turns this off too.
    """
    import os

    from taskdeck.checks import check_settings

    if os.environ.get("CELERY_SKIP_CHECKS"):
        return

    errors = [message for message in check_settings() if message.is_serious()]
    if errors:
        lines = "\n".join(f"  {message}" for message in errors)
        raise SystemExit(f"taskdeck: the worker does not start, its settings have errors:\n{lines}")
