"""One worker on Redis or on RabbitMQ, with what a guard test needs to publish to it and check it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import current_app

from tests.support.messages import amqp_depth, redis_depth
from tests.support.probe import PROBE_ARGS
from tests.support.services import Proc


@dataclass
class Bus:
    """A broker with one probed worker on its ``default`` queue."""

    name: str
    app: Any
    worker: Proc
    leftover: Callable[[], int]


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Environment the worker starts with besides the probe's; a test module may override it."""
    return {}


@pytest.fixture(params=["redis", "rabbitmq"])
def bus(request: pytest.FixtureRequest, probe: Any, worker_env: dict[str, str]) -> Bus:
    """The worker, the app to publish with, and ``leftover()``: messages still queued or unacknowledged."""
    args, env = PROBE_ARGS, {**probe.env, **worker_env}
    if request.param == "redis":
        # The shipped default on Redis: the records' recorder writes the result rows the tests read.
        request.getfixturevalue("start_recorder")()
        worker = request.getfixturevalue("start_worker")(["default"], concurrency=1, args=args, env=env)
        client = redis.Redis.from_url(request.getfixturevalue("broker"))
        return Bus("redis", current_app, worker, lambda: redis_depth(client) + client.hlen("unacked"))
    app = request.getfixturevalue("rabbitmq_app")
    worker = request.getfixturevalue("start_amqp_worker")(["default"], concurrency=1, args=args, env=env)

    def leftover() -> int:
        worker.stop()  # what it held unacknowledged goes back to the queue
        return amqp_depth(app)

    return Bus("rabbitmq", app, worker, leftover)
