"""taskdeck: Celery inside Django, with routing, priority lanes and monitoring.

The public API, importable from ``taskdeck`` itself. Names are loaded on
first use: a settings module imports ``taskdeck`` (for :func:`lanes_for`,
:class:`TaskRoutes`...) before Django is set up, so nothing here may import
Django's models or read settings at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from taskdeck.app import create_celery_app
    from taskdeck.demo import Job
    from taskdeck.errors import (
        ActionRefused,
        BrokerError,
        ConfigurationError,
        MessageRejected,
        MessageTooLargeError,
        TaskArgumentError,
        TaskdeckError,
        UnknownLaneError,
    )
    from taskdeck.lanes import NOTES_LANES, declare_queues, in_lane, lanes_for
    from taskdeck.routing import NamespaceRouter, TaskRoutes

#: Public name -> module that defines it.
_EXPORTS = {
    "create_celery_app": "taskdeck.app",
    "Job": "taskdeck.demo",
    "ActionRefused": "taskdeck.errors",
    "BrokerError": "taskdeck.errors",
    "ConfigurationError": "taskdeck.errors",
    "MessageRejected": "taskdeck.errors",
    "MessageTooLargeError": "taskdeck.errors",
    "TaskArgumentError": "taskdeck.errors",
    "TaskdeckError": "taskdeck.errors",
    "UnknownLaneError": "taskdeck.errors",
    "NOTES_LANES": "taskdeck.lanes",
    "declare_queues": "taskdeck.lanes",
    "in_lane": "taskdeck.lanes",
    "lanes_for": "taskdeck.lanes",
    "NamespaceRouter": "taskdeck.routing",
    "TaskRoutes": "taskdeck.routing",
}

__all__ = [
    "ActionRefused",
    "BrokerError",
    "ConfigurationError",
    "Job",
    "MessageRejected",
    "MessageTooLargeError",
    "NOTES_LANES",
    "NamespaceRouter",
    "TaskArgumentError",
    "TaskRoutes",
    "TaskdeckError",
    "UnknownLaneError",
    "__version__",
    "create_celery_app",
    "declare_queues",
    "in_lane",
    "lanes_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskdeck' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
