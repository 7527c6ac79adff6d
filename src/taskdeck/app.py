"""The Celery app factory: the notes' ``celery_app.py`` in one call."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.amqp import AMQP as CeleryAMQP
from kombu.exceptions import EncodeError

from taskdeck.errors import TaskArgumentError
from taskdeck.results import FIXUP


def create_celery_app(main: str, namespace: str = "CELERY", **kwargs: Any) -> Celery:
    """A Celery app configured from Django settings, with task autodiscovery.

    Equivalent to the notes' lines::

        app = Celery(main)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.autodiscover_tasks()

    plus taskdeck's publisher, which turns an argument that cannot be
    serialized into a :class:`~taskdeck.errors.TaskArgumentError` naming the
    task and the argument, and taskdeck's Django fix-up, with which workers
    keep their database connections between tasks instead of opening one per
    task (:mod:`taskdeck.results.connections`; ``TASKDECK["WORKER_DB_CONNECTIONS"]``).
    """
    kwargs.setdefault("amqp", "taskdeck.app:AMQP")
    # In place of Celery's Django fix-up (its only built-in one), not beside it:
    # both would connect their own task_prerun/task_postrun handlers.
    kwargs.setdefault("fixups", [FIXUP])
    app = Celery(main, **kwargs)
    app.config_from_object("django.conf:settings", namespace=namespace)
    app.autodiscover_tasks()
    return app


class AMQP(CeleryAMQP):
    """Celery's publisher, with errors that say which task and argument failed."""

    def _create_task_sender(self) -> Any:
        send = super()._create_task_sender()

        def send_task_message(producer: Any, name: str, message: Any, **kwargs: Any) -> Any:
            if message.sent_event is not None:
                # What the task-sent event lacks and the monitor needs: the
                # group the task belongs to and the priority it was sent with.
                headers = message.headers or {}
                message.sent_event.update(group_id=headers.get("group"), priority=kwargs.get("priority"))
            try:
                return send(producer, name, message, **kwargs)
            except EncodeError as exc:
                # kombu serializes the whole body before sending a byte, so
                # nothing reached the broker: find the culprit and say so.
                raise _argument_error(name, message.body, exc) from exc

        return send_task_message


def _argument_error(task: str, body: Any, exc: Exception) -> EncodeError:
    from kombu.utils.json import dumps

    for name, label, value in _arguments(task, body):
        try:
            dumps(value)
        except (TypeError, ValueError) as err:
            return TaskArgumentError(
                name, label, f"of type {type(value).__name__} cannot be encoded as JSON ({err})"
            )
    return TaskArgumentError(task, "a message field", f"cannot be encoded ({exc})")


def _arguments(task: str, body: Any) -> Any:
    """(task, label, value) for every argument in a protocol-2 body, canvas included."""
    if not (isinstance(body, tuple) and len(body) == 3):
        return
    args, kwargs, embed = body
    calls = [(task, args, kwargs)]
    for key in ("chain", "callbacks", "errbacks"):
        for sig in (embed or {}).get(key) or ():
            if isinstance(sig, dict):
                calls.append((sig.get("task", "?"), sig.get("args"), sig.get("kwargs")))
    chord = (embed or {}).get("chord")
    if isinstance(chord, dict):
        calls.append((chord.get("task", "?"), chord.get("args"), chord.get("kwargs")))
    for name, call_args, call_kwargs in calls:
        for i, value in enumerate(call_args or ()):
            yield name, f"positional argument {i}", value
        for key, value in (call_kwargs or {}).items():
            yield name, f"keyword argument {key!r}", value
