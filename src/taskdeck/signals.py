"""Celery signal handlers taskdeck installs, connected once from ``apps.ready``."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

logger = logging.getLogger("taskdeck")


def connect() -> None:
    from taskdeck.results import flusher

    signals.task_unknown.connect(_record_unknown_task, dispatch_uid="taskdeck.task_unknown")
    flusher.connect()


def _record_unknown_task(*, name: str, id: str, message: Any, **kwargs: Any) -> None:
    """Name the task on its FAILURE row so an unknown task is findable, not dropped.

    Celery already stores ``NotRegistered`` for the id; it leaves the task
    name empty, so the row could not be found by name.
    """
    from django_celery_results.models import TaskResult

    queue = (getattr(message, "delivery_info", None) or {}).get("routing_key")
    logger.error(
        "task %s[%s] from queue %r is not registered on this worker: stored as FAILURE "
        "(NotRegistered). Deploy the code that defines it, or fix the name.",
        name,
        id,
        queue,
    )
    TaskResult.objects.filter(task_id=id).update(task_name=name)
