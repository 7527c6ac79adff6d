"""Every exception taskdeck raises, in one place.

Messages name the task, setting or argument at fault and say what to do.
"""

from __future__ import annotations

from kombu.exceptions import EncodeError


def is_database_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database is down or unreachable (retry, keep the data).

    False when the database refused what it was sent (``DataError``,
    ``IntegrityError``) or the error is not the database's at all: trying the
    same data again would fail again, so the data must be set aside instead.
    """
    from django.db import DatabaseError, DataError, IntegrityError

    return isinstance(exc, DatabaseError) and not isinstance(exc, DataError | IntegrityError)


class TaskdeckError(Exception):
    """Base class of taskdeck's own errors."""


class ConfigurationError(TaskdeckError):
    """A TASKDECK or CELERY_* setting has a value taskdeck cannot use."""


class UnknownLaneError(ConfigurationError, KeyError):
    """A lane name that ``TASKDECK['LANES']`` does not define."""

    def __init__(self, lane: str, known: list[str]) -> None:
        self.lane = lane
        self.known = known
        super().__init__(f"unknown priority lane {lane!r}; TASKDECK['LANES'] defines {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class TaskArgumentError(EncodeError, TaskdeckError):
    """A task's arguments cannot be sent: nothing was published.

    Subclasses kombu's ``EncodeError`` so code that already catches
    serialization failures keeps working.
    """

    def __init__(self, task: str, argument: str, reason: str) -> None:
        self.task = task
        self.argument = argument
        self.reason = reason
        super().__init__(f"cannot enqueue task {task!r}: {argument} {reason}; nothing was sent")


class BrokerError(TaskdeckError):
    """The broker could not be reached or started."""


class ActionRefused(TaskdeckError):
    """A dashboard action (retry, revoke, purge, worker control) that taskdeck will not carry out.

    The message says why, e.g. the task's recorded arguments were truncated,
    the queue is not one the app declares, or the worker did not answer.
    """


class MessageTooLargeError(TaskArgumentError):
    """A task's serialized message is over ``TASKDECK["MAX_MESSAGE_BYTES"]``: nothing was published.

    ``argument`` names the largest argument, the likely culprit; ``size`` and
    ``limit`` are in bytes.
    """

    def __init__(self, task: str, argument: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            task,
            argument,
            f"makes the message {size:,} bytes, over the limit of {limit:,} "
            "(TASKDECK['MAX_MESSAGE_BYTES']): pass a reference to the data (a file or object-store "
            "key, a row id) instead of the data itself, or raise the limit",
        )


class MessageRejected(TaskdeckError):
    """What a worker stores as the result of a message it refused without running it.

    The message could not be decoded (malformed body), was in a content type
    the worker does not accept (pickle, or anything but JSON), or was not a
    task message at all. Its run is recorded as ``REJECTED`` under its task id.
    """


def first_line(exc: object, limit: int = 300) -> str:
    """The first line of an exception's message, cut to ``limit`` characters: for pages and logs."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]
