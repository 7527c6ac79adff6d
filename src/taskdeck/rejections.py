"""Messages a worker refuses are recorded, not only logged.

Celery refuses a message without running it when its body cannot be decoded
(malformed JSON), when its content type is not in ``CELERY_ACCEPT_CONTENT``
(pickle, or anything else but JSON), or when it is not a task message at all.
It logs the refusal, without the task id, and discards the message: nothing
is left to find afterwards. taskdeck records each refusal:

- the state ``REJECTED`` under the message's task id in the result backend
  (a django-celery-results row, where the recorder's reconciliation finds
  it), with a :class:`~taskdeck.errors.MessageRejected` as its result saying
  why; ``AsyncResult(id).state`` answers ``"REJECTED"``;
- a ``task-rejected`` event, so the recorder shows the run at once;
- one log line naming the task, its id, its queue, the content type and the
  reason.

A message without a task id is recorded under a new one, given in the log
line. A refused message whose id is a task that already finished leaves that
task's result alone (only the log line is written).

Two hooks: Celery's ``task_rejected`` signal, sent for disallowed content
types, invalid task messages and non-task messages (connected by
:func:`taskdeck.signals.connect`), and, for bodies that cannot be decoded, for
which Celery sends no signal, the consumer step :class:`RecordDecodeErrors`
(added to apps made by :func:`taskdeck.app.create_celery_app`), which wraps
the consumer's ``on_decode_error``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import bootsteps, states
from celery.app.task import Context

from taskdeck.errors import MessageRejected

logger = logging.getLogger("taskdeck")


def on_task_rejected(
    sender: Any = None, message: Any = None, exc: Exception | None = None, **kwargs: Any
) -> None:
    """``task_rejected`` handler: ``sender`` is the worker's consumer."""
    if sender is None or message is None:
        return
    reason = "not a task message" if exc is None else "refused by the worker"
    record(sender, message, exc, reason)


class RecordDecodeErrors(bootsteps.Step):
    """Consumer step: a task message whose body cannot be decoded is recorded before Celery drops it."""

    name = "taskdeck.rejections.RecordDecodeErrors"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        # Replaced on the instance before the task consumer is made (it takes
        # the bound method when the Tasks step starts).
        celery_on_decode_error = c.on_decode_error

        def on_decode_error(message: Any, exc: Exception) -> None:
            if not _is_control(message):
                record(c, message, exc, "body cannot be decoded")
            celery_on_decode_error(message, exc)

        c.on_decode_error = on_decode_error
        super().__init__(c, **kwargs)


def _is_control(message: Any) -> bool:
    """Remote-control traffic (``celery.pidbox``) goes through the same decode hook."""
    exchange = (getattr(message, "delivery_info", None) or {}).get("exchange") or ""
    return str(exchange).endswith("pidbox")


def record(consumer: Any, message: Any, exc: Exception | None, reason: str) -> str | None:
    """Store, announce and log one refused message; returns the task id it was recorded under.

    Never raises: a failure to record is logged, and the consumer goes on.
    """
    try:
        return _record(consumer, message, exc, reason)
    except Exception:  # the consumer must keep consuming whatever happens here
        logger.exception("could not record a refused message (%s)", reason)
        return None


def _record(consumer: Any, message: Any, exc: Exception | None, reason: str) -> str:
    headers = getattr(message, "headers", None) or {}
    properties = getattr(message, "properties", None) or {}
    delivery = getattr(message, "delivery_info", None) or {}
    name = str(headers.get("task") or "")
    task_id = headers.get("id") or properties.get("correlation_id")
    generated = not task_id
    task_id = str(task_id or uuid.uuid4())
    queue = str(delivery.get("routing_key") or "")
    content_type = getattr(message, "content_type", None) or ""
    detail = "" if exc is None else f": {type(exc).__name__}: {str(exc)[:300]}"
    error = MessageRejected(
        f"message refused without running it, {reason}{detail} "
        f"(content type {content_type!r}, queue {queue!r}); the project accepts "
        f"{', '.join(consumer.app.conf.accept_content or ['json'])} task messages only"
    )
    backend = consumer.app.backend
    finished = _finished(backend, task_id) if not generated else False
    logger.error(
        "task %s[%s] from queue %r refused (%s%s, content type %r)%s",
        name or "(no task name)",
        task_id,
        queue,
        reason,
        detail,
        content_type,
        " and recorded as REJECTED" + (" under a new id: the message had none" if generated else "")
        if not finished
        else "; a task with this id already finished, its result is kept",
    )
    if finished:
        return task_id
    request = Context(
        id=task_id,
        task=name,
        hostname=getattr(consumer, "hostname", None),
        delivery_info=delivery,
        argsrepr=headers.get("argsrepr"),
        kwargsrepr=headers.get("kwargsrepr"),
    )
    backend.store_result(task_id, backend.prepare_exception(error), states.REJECTED, request=request)
    dispatcher = getattr(consumer, "event_dispatcher", None)
    if dispatcher is not None:
        dispatcher.send(
            "task-rejected",
            uuid=task_id,
            name=name or None,
            exception=repr(error),
            queue=queue,
            routing_key=queue,
            requeue=False,
        )
    return task_id


def _finished(backend: Any, task_id: str) -> bool:
    try:
        return backend.get_task_meta(task_id).get("status") in states.READY_STATES
    except Exception:  # unknown: record it anyway
        return False
