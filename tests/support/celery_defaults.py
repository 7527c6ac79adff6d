"""core/settings.py with Celery's own worker defaults put back, for tests/test_priority_defaults.py.

Queues, lanes and priorities stay the project's (so a worker on this module
and a publisher on the project's settings declare the same queues); only what
Celery does by default on the worker comes back: messages acknowledged on
receipt, four reserved per process, several queues polled round-robin.
"""

from core.settings import *  # noqa: F403

CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
