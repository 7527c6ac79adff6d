"""Django's Tasks framework: ``django.tasks`` (Django 6.0+) or its backport ``django_tasks`` (5.2).

Everything taskdeck uses of the framework is imported here, once, so the
rest of :mod:`taskdeck.tasks` reads the same on both. The backport is the
``tasks`` extra (``pip install taskdeck[tasks]``).
"""

from __future__ import annotations

from typing import Any

import django

from taskdeck.errors import ConfigurationError

if django.VERSION >= (6, 0):
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    FRAMEWORK = "django.tasks"
else:  # pragma: no cover - exercised by the Django 5.2 runs
    try:
        from django_tasks import DEFAULT_TASK_QUEUE_NAME, task_backends
    except ImportError as exc:
        raise ConfigurationError(
            "taskdeck.tasks needs Django's Tasks framework: Django 6.0 or later, or on Django "
            f"{django.get_version()} the django-tasks backport (pip install 'taskdeck[tasks]')"
        ) from exc
    from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef]
    from django_tasks.base import (  # type: ignore[no-redef,assignment]
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.exceptions import InvalidTaskError as InvalidTask  # type: ignore[no-redef]
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch  # type: ignore[no-redef]
    from django_tasks.signals import (  # type: ignore[no-redef,assignment]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django_tasks.utils import normalize_json  # type: ignore[no-redef]

    FRAMEWORK = "django_tasks"


def set_field(result: Any, name: str, value: Any) -> None:
    """Set a field of the framework's frozen dataclasses, as its own backends do."""
    object.__setattr__(result, name, value)


__all__ = [
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "normalize_json",
    "set_field",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
