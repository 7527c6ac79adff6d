"""A broker of the bench's own: a claimed Redis database, or a fresh RabbitMQ vhost.

Redis: a database number claimed with ``SET NX`` as the tests claim theirs
(bench/results.py's :func:`~bench.results.redis_db`), flushed at the end.
RabbitMQ: a vhost made with ``rabbitmqctl add_vhost`` and deleted at the end,
queues and messages with it; a vhost per case, because a queue declared
without ``x-max-priority`` cannot be redeclared with it.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu import Connection

from bench.results import CLAIM_KEY, redis_db
from taskdeck.brokers import for_url

RABBITMQ = os.environ.get("BENCH_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")
BROKERS = ("redis", "rabbitmq")

__all__ = ["BROKERS", "RABBITMQ", "empty_redis", "queue_ready", "rabbitmq_vhost", "redis_db", "versions"]


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


@contextmanager
def rabbitmq_vhost(base_url: str = RABBITMQ, prefix: str = "taskdeck-bench") -> Iterator[str]:
    """A vhost of our own on which the URL's user may do everything; yields its broker URL.

    ``base_url`` is the server's URL without a vhost. The tests make theirs
    here too (tests/support/rabbitmq.py).
    """
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    user = base_url.split("://", 1)[1].split(":", 1)[0] or "guest"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield f"{base_url}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def empty_redis(url: str) -> None:
    """Flush a claimed database, keeping the claim."""
    client = redis.Redis.from_url(url)
    claim = client.get(CLAIM_KEY)
    client.flushdb()
    client.set(CLAIM_KEY, claim or b"bench", ex=6 * 3600)


def queue_ready(conn: Connection, queue: str) -> int:
    """Messages waiting in ``queue`` (every priority sub-queue on Redis), from the broker itself."""
    return for_url(conn.as_uri()).queue_depths(conn, [queue])[0].ready


def versions() -> str:
    """The RabbitMQ server's version (bench/results.py's ``machine()`` names the rest)."""
    for line in rabbitmqctl("status").splitlines():
        if "RabbitMQ version" in line:
            return f"RabbitMQ {line.split(':', 1)[1].strip()}"
    return "RabbitMQ ?"
