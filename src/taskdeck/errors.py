"""Every exception taskdeck raises, in one place.

Messages name the task, setting or argument at fault and say what to do.
"""

from __future__ import annotations

from kombu.exceptions import EncodeError


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
