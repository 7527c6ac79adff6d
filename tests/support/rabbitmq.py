"""RabbitMQ for the tests: a virtual host of our own, and a Celery app that publishes to it.

The vhost is created with ``rabbitmqctl`` and deleted afterwards, queues and
messages with it, so parallel runs and earlier runs never share a queue (a
queue declared once without ``x-max-priority`` could not gain it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from django.conf import settings

from bench.brokers import rabbitmq_vhost
from taskdeck.lanes import declare_queues, lanes_for
from taskdeck.preset import default_result_backend
from tests.support.services import RABBITMQ


@contextmanager
def vhost() -> Iterator[str]:
    """A fresh vhost on which the test user may do everything; yields its broker URL."""
    with rabbitmq_vhost(RABBITMQ, prefix="taskdeck-test") as url:
        yield url


def celery_app(broker_url: str) -> Celery:
    """An app configured like the project's, publishing to ``broker_url``.

    The project's ``CELERY_TASK_QUEUES`` were declared for the broker of the
    test process's settings; on RabbitMQ the lane queues need
    ``x-max-priority``, and the producer must declare them exactly as the
    workers do, so they are declared again for this URL, together with the
    lane queues ``core/settings.py`` gives a worker on this broker.
    """
    app = Celery("taskdeck-test-amqp", broker=broker_url, set_as_current=False, fixups=[])
    app.config_from_object("django.conf:settings", namespace="CELERY")
    names = [q.name for q in settings.CELERY_TASK_QUEUES] + list(lanes_for(broker_url).values())
    app.conf.task_queues = declare_queues(broker_url, names)
    # The result backend core/settings.py picks on this broker (the direct one, without a Redis
    # for records), which a worker started on it also uses.
    if not os.environ.get("CELERY_BACKEND"):
        app.conf.result_backend = default_result_backend(
            broker_url, os.environ.get("TASKDECK_RESULTS_REDIS_URL")
        )
    return app
