"""``taskdeck.tasks.CeleryBackend``: Django's Tasks framework on the project's Celery workers."""

from __future__ import annotations

import uuid
from functools import cached_property
from typing import Any

from celery import current_app
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.utils import timezone

from taskdeck import brokers, conf
from taskdeck.errors import ConfigurationError, TaskArgumentError
from taskdeck.lanes import lane_names, lane_queue
from taskdeck.routing import decide
from taskdeck.tasks import compat, priority, results, runner


class CeleryBackend(compat.BaseTaskBackend):
    """Runs ``@task`` functions on Celery workers, in taskdeck's lanes, with results in the database.

    ``OPTIONS`` (all optional):

    ``PRIORITY_LANES``
        Lane name -> lowest Django priority it takes (:mod:`taskdeck.tasks.priority`).
    ``ENQUEUE_ON_COMMIT``
        Inside ``transaction.atomic`` send the message when the transaction
        commits (nothing is sent if it rolls back). Default: ``True``.
    ``DATABASE``
        Alias of the database holding the results table. Default: where
        Django's routers send writes of django-celery-results' ``TaskResult``.
    """

    supports_defer = True
    supports_async_task = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - {"PRIORITY_LANES", "ENQUEUE_ON_COMMIT", "DATABASE"}
        if unknown:
            raise ConfigurationError(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {', '.join(sorted(unknown))}; "
                "taskdeck.tasks.CeleryBackend takes PRIORITY_LANES, ENQUEUE_ON_COMMIT and DATABASE"
            )

    @cached_property
    def supports_get_result(self) -> bool:
        """Whether the workers' result backend writes django-celery-results' table, where results are read."""
        from django_celery_results.backends.database import DatabaseBackend

        return isinstance(current_app.backend, DatabaseBackend)

    @property
    def database(self) -> str:
        from django_celery_results.models import TaskResult as Row

        return str(self.options.get("DATABASE") or router.db_for_write(Row) or DEFAULT_DB_ALIAS)

    # --- validation -------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        if task.func.__module__ == "__main__":
            raise compat.InvalidTask(
                f"Task {task.func.__qualname__} is defined in __main__ (a script run directly): workers "
                "import tasks by module path and cannot find it; define it in an importable module"
            )
        runner.register(task)

    def validate_arguments(self, task: Any, args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
        """Arguments as Django defines them (JSON values), or a :class:`TaskArgumentError` naming one."""
        name = runner.celery_name(task)
        labelled = [(f"positional argument {i}", v) for i, v in enumerate(args)]
        labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in labelled:
            try:
                compat.normalize_json(value)
            except (TypeError, ValueError) as exc:
                raise TaskArgumentError(
                    name, label, f"of type {type(value).__name__} is not a JSON value ({exc})"
                ) from exc
        return compat.normalize_json(list(args)), compat.normalize_json(dict(kwargs))

    # --- sending ----------------------------------------------------------

    def options_for(self, task: Any) -> dict[str, Any]:
        """``send_task`` options of ``task``: lane priority, queue, ETA.

        The lane comes from the priority; the queue is ``queue_name`` when it
        is not the default one, else the route's (static table, namespace
        router) when one matches the task's name, else the lane's.
        """
        app = current_app
        table = priority.thresholds(self.options.get("PRIORITY_LANES"), lane_names())
        lane = priority.lane_for(task.priority, table)
        broker = brokers.for_url(app.conf.broker_url or "")
        options: dict[str, Any] = {"priority": broker.lane_priority(lane_names().index(lane))}
        if task.queue_name != compat.DEFAULT_TASK_QUEUE_NAME:
            options["queue"] = task.queue_name
        elif decide(app, runner.celery_name(task)).rule == "default queue":
            options["queue"] = lane_queue(lane)
        if task.run_after is not None:
            options["eta"] = task.run_after
        return options

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        args, kwargs = self.validate_arguments(task, args, kwargs)
        options = self.options_for(task)
        name = runner.celery_name(task)
        task_id = str(uuid.uuid4())
        enqueued_at = timezone.now()
        if self.supports_get_result:
            # Before the message: a worker's own row for this id can only come after it.
            enqueued_at = results.record_enqueued(task_id, name, args, kwargs, self.database)
        result = compat.new_result(
            task, task_id, "READY", args, kwargs, backend=self.alias, enqueued_at=enqueued_at
        )

        def send() -> None:
            current_app.send_task(
                name,
                args=args,
                kwargs=kwargs,
                task_id=result.id,
                argsrepr=repr(args),
                kwargsrepr=repr(kwargs),
                **options,
            )
            compat.task_enqueued.send(sender=type(self), task_result=result)

        connection = connections[self.database]
        if self.options.get("ENQUEUE_ON_COMMIT", True) and connection.in_atomic_block:
            transaction.on_commit(send, using=self.database, robust=False)
        else:
            send()
        return result

    # --- results ----------------------------------------------------------

    def get_result(self, result_id: str) -> Any:
        if not self.supports_get_result:
            raise NotImplementedError(
                "taskdeck.tasks.CeleryBackend reads results from django-celery-results' table: set "
                "CELERY_RESULT_BACKEND to taskdeck.results.backend:DatabaseBackend (or django-db)"
            )
        return results.read(self, result_id, self.database)

    # --- checks -----------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = []
        try:
            priority.thresholds(self.options.get("PRIORITY_LANES"), lane_names())
        except ConfigurationError as exc:
            messages.append(
                checks.Error(
                    str(exc),
                    hint="Map each lane of TASKDECK['LANES'] to the lowest Django priority it takes, "
                    "falling from the highest lane to the lowest, which takes -100.",
                    id="taskdeck.E101",
                )
            )
        if not self.supports_get_result:
            messages.append(
                checks.Warning(
                    f"TASKS[{self.alias!r}]: results of Django tasks cannot be read: the Celery result "
                    "backend does not write django-celery-results' table",
                    hint="Set CELERY_RESULT_BACKEND = 'taskdeck.results.backend:DatabaseBackend'.",
                    id="taskdeck.W101",
                )
            )
        queues = conf.get()["WORKERS"]
        if queues:
            consumed = {q for group in queues.values() for q in group["queues"]}
            extra = sorted(set(self.queues) - {compat.DEFAULT_TASK_QUEUE_NAME} - consumed)
            if extra:
                messages.append(
                    checks.Warning(
                        f"TASKS[{self.alias!r}]['QUEUES'] lists {', '.join(extra)}, which no worker group "
                        "of TASKDECK['WORKERS'] consumes: tasks sent there wait forever",
                        hint="Add the queue to a worker group, or remove it from QUEUES.",
                        id="taskdeck.W103",
                    )
                )
        return messages
