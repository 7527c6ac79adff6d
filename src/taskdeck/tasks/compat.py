"""Django's Tasks framework: ``django.tasks`` (Django 6.0+) or its backport ``django_tasks`` (5.2).

Everything taskdeck uses of the framework is looked up here, once, so the
rest of :mod:`taskdeck.tasks` reads the same on both. The backport is the
``tasks`` extra (``pip install taskdeck[tasks]``). The names are typed
``Any``: the two frameworks define the same API in two sets of classes.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import django

from taskdeck.errors import ConfigurationError

#: The package of the framework in use.
FRAMEWORK = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"


def _module(name: str) -> Any:
    try:
        return import_module(f"{FRAMEWORK}{name}")
    except ImportError as exc:
        raise ConfigurationError(
            "taskdeck.tasks needs Django's Tasks framework: Django 6.0 or later, or on Django "
            f"{django.get_version()} the django-tasks backport (pip install 'taskdeck[tasks]')"
        ) from exc


_root, _base, _exceptions = _module(""), _module(".base"), _module(".exceptions")

DEFAULT_TASK_QUEUE_NAME: str = _root.DEFAULT_TASK_QUEUE_NAME
task_backends: Any = _root.task_backends
BaseTaskBackend: Any = _module(".backends.base").BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
# The backport's names for two of them.
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
TaskResultMismatch: Any = _exceptions.TaskResultMismatch
_signals = _module(".signals")
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
normalize_json: Any = (
    import_module("django.utils.json").normalize_json
    if FRAMEWORK == "django.tasks"
    else _module(".utils").normalize_json
)


def new_result(
    task: Any,
    result_id: str,
    status: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    backend: str,
    enqueued_at: Any = None,
    started_at: Any = None,
    finished_at: Any = None,
    worker_ids: list[str] | None = None,
) -> Any:
    """The framework's ``TaskResult``, no errors yet; the last attempt started at ``started_at``."""
    return TaskResult(
        task=task,
        id=result_id,
        status=TaskResultStatus(status),
        enqueued_at=enqueued_at,
        started_at=started_at,
        finished_at=finished_at,
        last_attempted_at=started_at,
        args=args,
        kwargs=kwargs,
        backend=backend,
        errors=[],
        worker_ids=list(worker_ids or []),
    )


def set_field(result: Any, name: str, value: Any) -> None:
    """Set a field of the framework's frozen dataclasses, as its own backends do."""
    object.__setattr__(result, name, value)
