"""One Celery task per Django task, named by the Django task's import path.

A Django ``@task`` is registered with Celery when its module is imported
(the framework validates every task on creation, and
:meth:`~taskdeck.tasks.CeleryBackend.validate_task` registers it), under the
name ``module.function``: the name the dashboard, the API, ``/metrics``, the
routes and the lanes see, as for any Celery task. A worker knows the Django
tasks of the modules it imports: Celery's autodiscovery imports every
installed app's ``tasks`` module; list other modules in ``CELERY_IMPORTS``.

On the worker the Celery task calls the Django function, with a
:class:`TaskContext` first when the task ``takes_context``, and sends the
framework's ``task_started`` and ``task_finished`` signals. Celery stores the
outcome in the results table as for any task, where ``get_result()`` reads it.
"""

from __future__ import annotations

import traceback
from typing import Any

from asgiref.sync import async_to_sync
from celery import shared_task
from django.utils import timezone

#: Django task import path -> the framework's Task, for the tasks registered in this process.
REGISTRY: dict[str, Any] = {}


def celery_name(task: Any) -> str:
    """The Celery task name of a Django task: its import path."""
    return str(task.module_path)


def register(task: Any) -> None:
    """Make ``task`` a Celery task of every Celery app (now and future ones), once per name."""
    name = celery_name(task)
    if name in REGISTRY:
        return
    # The task as declared (no .using() changes): workers run what the module defines.
    REGISTRY[name] = task
    shared_task(name=name, bind=True, serializer="json")(_runner(name))


def _runner(name: str) -> Any:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        return execute(REGISTRY[name], self.request, list(args), kwargs)

    run.__name__ = name.rpartition(".")[2]
    run.__qualname__ = run.__name__
    run.__module__ = name.rpartition(".")[0]
    run.__doc__ = f"Runs the Django task {name}."
    return run


def attempt_of(request: Any) -> int:
    """Which attempt this is: Celery retries, plus one for a redelivery the broker reports (RabbitMQ)."""
    attempt = int(getattr(request, "retries", 0) or 0) + 1
    if (getattr(request, "delivery_info", None) or {}).get("redelivered"):
        attempt += 1
    return attempt


def execute(task: Any, request: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run ``task`` for a Celery request, with the framework's context and signals."""
    from taskdeck.tasks import compat

    now = timezone.now()
    hostname = str(getattr(request, "hostname", None) or "")
    result = compat.new_result(
        task,
        str(request.id),
        "RUNNING",
        args,
        kwargs,
        backend=task.backend,
        started_at=now,
        worker_ids=[hostname] * attempt_of(request),
    )
    backend = type(task.get_backend())
    compat.task_started.send(sender=backend, task_result=result)
    try:
        call_args = [compat.TaskContext(task_result=result), *args] if task.takes_context else args
        if _is_async(task.func):
            value = async_to_sync(task.func)(*call_args, **kwargs)
        else:
            value = task.func(*call_args, **kwargs)
        value = compat.normalize_json(value)
    except BaseException as exc:
        compat.set_field(result, "status", compat.TaskResultStatus.FAILED)
        compat.set_field(result, "finished_at", timezone.now())
        kind = type(exc)
        result.errors.append(
            compat.TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                traceback="".join(traceback.format_exception(exc)),
            )
        )
        compat.task_finished.send(sender=backend, task_result=result)
        raise
    compat.set_field(result, "status", compat.TaskResultStatus.SUCCESSFUL)
    compat.set_field(result, "finished_at", timezone.now())
    compat.set_field(result, "_return_value", value)
    compat.task_finished.send(sender=backend, task_result=result)
    return value


def _is_async(func: Any) -> bool:
    from inspect import iscoroutinefunction

    return iscoroutinefunction(func)
