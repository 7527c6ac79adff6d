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
the consumer's ``on_decode_error``. Messages of the wrong shape, which Celery
would let crash the worker, are refused by :mod:`taskdeck.guard` through
:func:`refuse`.

Every refused message is also kept in the dead-letter store
(:mod:`taskdeck.deadletter`) with its raw headers and body, from which it
can be requeued once the task exists or the producer is fixed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import bootsteps, states
from celery.app.task import Context
from kombu.exceptions import ContentDisallowed, DecodeError

from taskdeck.errors import MessageRejected

logger = logging.getLogger("taskdeck")

NOT_A_TASK = "not a task message"


def on_task_rejected(
    sender: Any = None, message: Any = None, exc: Exception | None = None, **kwargs: Any
) -> None:
    """``task_rejected`` handler: ``sender`` is the worker's consumer."""
    if sender is None or message is None:
        return
    reason = NOT_A_TASK if exc is None else "refused by the worker"
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


def refuse(consumer: Any, message: Any, reason: str) -> None:
    """Refuse a message Celery has not taken: dead-letter and record it, then acknowledge it.

    Acknowledged after it is kept, so a worker that dies in between gets it
    again rather than losing it. Never raises but broker connection errors.
    """
    record(consumer, message, None, reason)
    if not getattr(message, "acknowledged", True):
        message.ack_log_error(logger, consumer.connection_errors)


def record(consumer: Any, message: Any, exc: Exception | None, reason: str) -> str | None:
    """Dead-letter, store, announce and log one refused message; returns the task id it was recorded under.

    Never raises: a failure to record is logged, and the consumer goes on.
    """
    task_id, generated = recorded_id(message)
    dead_letter(consumer, message, exc, reason, task_id)
    try:
        return _record(consumer, message, exc, reason, task_id, generated)
    except Exception:  # the consumer must keep consuming whatever happens here
        logger.exception("could not record a refused message (%s)", reason)
        return None


def dead_letter(consumer: Any, message: Any, exc: Exception | None, reason: str, task_id: str) -> None:
    """Keep ``message`` raw in the dead-letter store, under the id its run is recorded under. Never raises."""
    from taskdeck import deadletter

    try:
        headers = getattr(message, "headers", None)
        raw_headers = headers if isinstance(headers, dict) else {"(not a mapping)": headers}
        delivery = getattr(message, "delivery_info", None) or {}
        properties = {
            key: value
            for key, value in (getattr(message, "properties", None) or {}).items()
            if key not in _TRANSPORT_PROPERTIES
        }
        properties.update(
            content_type=getattr(message, "content_type", None),
            content_encoding=getattr(message, "content_encoding", None),
            exchange=delivery.get("exchange"),
            routing_key=delivery.get("routing_key"),
        )
        name, _ = _name_and_id(message)
        body = getattr(message, "body", None)
        detail = "" if exc is None else f": {type(exc).__name__}: {str(exc)[:300]}"
        deadletter.store(
            "message",
            f"{reason}{detail}",
            source=str(getattr(consumer, "hostname", None) or "worker"),
            headers=raw_headers,
            body=body if isinstance(body, bytes | str) else None if body is None else repr(body),
            task_id=task_id,
            task=name,
            properties=properties,
        )
    except Exception:  # store() never raises; this guards the reading of a strange message
        logger.exception("could not dead-letter a refused message (%s)", reason)


#: Broker bookkeeping in a message's properties (the Redis transport's envelope), not the message's own.
_TRANSPORT_PROPERTIES = frozenset({"delivery_tag", "delivery_info", "body_encoding"})


def _name_and_id(message: Any) -> tuple[str, str | None]:
    """The task name and id of a message, when they are usable as such.

    From its headers, or, for a message of protocol 1 (no ``task`` header), from its body.
    """
    headers = getattr(message, "headers", None)
    if not isinstance(headers, dict):
        return "", None
    if "task" not in headers:
        try:
            payload = message.decode()  # kombu caches it: the guard decoded it already
        except Exception:
            payload = None
        if isinstance(payload, dict) and "task" in payload:
            headers = payload
    name, task_id = headers.get("task"), headers.get("id")
    name = name[:255] if isinstance(name, str) else ""
    return name, task_id if isinstance(task_id, str) and 0 < len(task_id) <= 255 else None


def recorded_id(message: Any) -> tuple[str, bool]:
    """The task id a refused message is recorded under, and whether it is a new one (it had none usable)."""
    try:
        _, task_id = _name_and_id(message)
        if task_id is None:
            task_id = (getattr(message, "properties", None) or {}).get("correlation_id")
            task_id = task_id if isinstance(task_id, str) and 0 < len(task_id) <= 255 else None
    except Exception:  # a message too strange to read an id from
        task_id = None
    return (task_id, False) if task_id else (str(uuid.uuid4()), True)


def _record(
    consumer: Any, message: Any, exc: Exception | None, reason: str, task_id: str, generated: bool
) -> str:
    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, dict) else {}
    delivery = getattr(message, "delivery_info", None) or {}
    name, _ = _name_and_id(message)
    queue = str(delivery.get("routing_key") or "")
    content_type = getattr(message, "content_type", None) or ""
    detail = "" if exc is None else f": {type(exc).__name__}: {str(exc)[:300]}"
    accepts = ""
    if reason == NOT_A_TASK or isinstance(exc, ContentDisallowed | DecodeError):
        accepts = (
            f"; the project accepts {', '.join(consumer.app.conf.accept_content or ['json'])} task messages"
        )
    error = MessageRejected(
        f"message refused without running it, {reason}{detail} "
        f"(content type {content_type!r}, queue {queue!r}){accepts}; kept in the dead-letter store"
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
        " and recorded as REJECTED" + (" under a new id: the message had none usable" if generated else "")
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
        argsrepr=_text_or_none(headers.get("argsrepr")),
        kwargsrepr=_text_or_none(headers.get("kwargsrepr")),
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


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _finished(backend: Any, task_id: str) -> bool:
    try:
        return backend.get_task_meta(task_id).get("status") in states.READY_STATES
    except Exception:  # unknown: record it anyway
        return False
