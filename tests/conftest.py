"""Real services for the tests: a Redis database of our own, PostgreSQL, Celery workers.

Workers are subprocesses (``celery -A core worker``) on the same Redis
database and the same PostgreSQL test database as the test, so tests that use
them take the ``services_env`` fixture (which implies ``transactional_db``).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import current_app
from django.db import connection

from tests.support.services import ARTIFACTS, REDIS, ROOT, Proc, reset_pools, wait_for


@pytest.fixture(scope="session")
def redis_db_url() -> Iterator[str]:
    """A Redis database number of our own, claimed with SET NX so parallel runs don't collide.

    The test process's Celery app publishes to it for the whole session.
    """
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        if client.set("taskdeck:test:claim", token, nx=True, ex=3600):
            break
    else:
        pytest.fail("no free Redis database number (1-15) to claim for the tests")
    url = f"{REDIS}/{number}"
    conf = current_app.conf
    old = conf.broker_url
    reset_pools()
    conf.broker_url = url
    yield url
    reset_pools()
    conf.broker_url = old
    client.flushdb()


@pytest.fixture
def broker(redis_db_url: str) -> Iterator[str]:
    """The claimed Redis database, emptied for this test."""
    client = redis.Redis.from_url(redis_db_url)
    keep = client.get("taskdeck:test:claim")
    client.flushdb()
    client.set("taskdeck:test:claim", keep, ex=3600)
    yield redis_db_url


@pytest.fixture
def pg(transactional_db: None) -> str:
    """The test database's URL, for subprocesses; PostgreSQL only (no silent SQLite)."""
    settings = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.fail(
            "these tests need PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/taskdeck "
            f"(got {connection.vendor})"
        )
    user = settings.get("USER") or "postgres"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


@pytest.fixture
def services_env(broker: str, pg: str) -> dict[str, str]:
    """The environment of a subprocess on this test's broker and database."""
    env = dict(os.environ)
    env.update(
        CELERY_BROKER=broker, DATABASE_URL=pg, DJANGO_SETTINGS_MODULE="core.settings", PYTHONUNBUFFERED="1"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def start_worker(
    services_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Proc]]:
    """Start ``celery -A core worker`` on the given queues; waits until it answers ping."""
    procs: list[Proc] = []

    def start(
        queues: list[str],
        concurrency: int = 2,
        name: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        hostname = f"{name or 'w' + uuid.uuid4().hex[:6]}@test"
        argv = [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", ",".join(queues)]
        argv += ["-c", str(concurrency), "-n", hostname, "-l", "info", "--without-mingle", "--without-gossip"]
        argv += args or []
        proc = Proc(argv, {**services_env, **(env or {})}, ARTIFACTS / f"{request.node.name}-{hostname}.log")
        proc.hostname = hostname
        procs.append(proc)
        wait_for(
            lambda: not proc.alive() or current_app.control.ping([hostname], timeout=0.5),
            60,
            f"worker {hostname} to answer ping",
        )
        assert proc.alive(), f"worker exited, see {proc.log}"
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def staff_client(client: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    client.force_login(user)
    return client
