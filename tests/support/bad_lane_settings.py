"""The reference project's settings with a route to a lane ``TASKDECK["LANES"]`` does not define."""

from core.settings import *  # noqa: F403
from taskdeck.routing import TaskRoutes

CELERY_TASK_ROUTES = (TaskRoutes({"orders.tasks.*": {"lane": "urgent"}}),)
