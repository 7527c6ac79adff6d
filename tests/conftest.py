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

from tests.support.probe import Probe
from tests.support.rabbitmq import celery_app as rabbitmq_celery_app
from tests.support.rabbitmq import vhost as rabbitmq_vhost
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
    # Kept, or set again if something flushed the database meanwhile (else every later test errs).
    keep = client.get("taskdeck:test:claim") or "taskdeck-test"
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


class Workers:
    """``celery -A core worker`` subprocesses of one test, stopped at its end."""

    def __init__(self, env: dict[str, str], app: Any, request: pytest.FixtureRequest, prefix: str) -> None:
        self.env, self.app, self.request, self.prefix = env, app, request, prefix
        self.procs: list[Proc] = []

    def start(
        self,
        queues: list[str],
        concurrency: int = 2,
        name: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        gossip: bool = False,
    ) -> Proc:
        """Start a worker on ``queues``; waits until it answers ping through ``self.app``'s broker.

        ``gossip``: the worker listens to other workers' events, as Celery's workers do by default.
        """
        hostname = f"{name or self.prefix + uuid.uuid4().hex[:6]}@test"
        argv = [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", ",".join(queues)]
        argv += ["-c", str(concurrency), "-n", hostname, "-l", "info", "--without-mingle"]
        argv += [] if gossip else ["--without-gossip"]
        argv += args or []
        log = ARTIFACTS / f"{self.request.node.name}-{hostname}.log"
        proc = Proc(argv, {**self.env, **(env or {})}, log)
        proc.hostname = hostname
        self.procs.append(proc)
        wait_for(
            lambda: not proc.alive() or self.app.control.ping([hostname], timeout=0.5),
            60,
            f"worker {hostname} to answer ping on {self.env.get('CELERY_BROKER')}",
        )
        assert proc.alive(), f"worker exited, see {proc.log}"
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def start_worker(
    services_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Proc]]:
    """Start ``celery -A core worker`` on the given queues; waits until it answers ping."""
    workers = Workers(services_env, current_app, request, prefix="w")
    yield workers.start
    workers.stop()


@pytest.fixture
def start_recorder(
    services_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Proc]]:
    """Start ``python -m taskdeck.monitor monitor -A core``; waits until it has a heartbeat."""
    from taskdeck.models import RecorderState

    procs: list[Proc] = []

    def start(name: str = "default", env: dict[str, str] | None = None) -> Proc:
        args = [sys.executable, "-m", "taskdeck.monitor", "monitor", "-A", "core", "--name", name]
        log = ARTIFACTS / f"{request.node.name}-recorder-{len(procs)}.log"
        proc = Proc(args, {**services_env, **(env or {})}, log)
        procs.append(proc)
        wait_for(
            lambda: (
                proc.popen.poll() is not None
                or RecorderState.objects.filter(pid=proc.pid).exclude(heartbeat_at=None).exists()
            ),
            60,
            "the recorder to listen",
        )
        assert proc.popen.poll() is None, f"recorder exited, see {proc.log}"
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def staff_client(client: Any, django_user_model: Any) -> Any:
    """A client logged in as the dashboard's read-only role: staff with ``view_dashboard``."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    return client


@pytest.fixture
def probe(broker: str) -> Probe:
    """What probed workers saw when each task started (tests/support/probe.py), in this test's Redis.

    Start workers with ``args=PROBE_ARGS, env=probe.env``.
    """
    return Probe(broker)


@pytest.fixture
def rabbitmq() -> Iterator[str]:
    """The URL of a RabbitMQ vhost of this test's own, deleted afterwards."""
    with rabbitmq_vhost() as url:
        yield url


@pytest.fixture
def rabbitmq_app(rabbitmq: str) -> Iterator[Any]:
    """A Celery app configured like the project's that publishes to the ``rabbitmq`` vhost."""
    app = rabbitmq_celery_app(rabbitmq)
    yield app
    app.close()


@pytest.fixture
def start_amqp_worker(
    services_env: dict[str, str], rabbitmq: str, rabbitmq_app: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Proc]]:
    """``start_worker``'s twin on the ``rabbitmq`` vhost; waits until the worker answers ping there."""
    workers = Workers({**services_env, "CELERY_BROKER": rabbitmq}, rabbitmq_app, request, prefix="a")
    yield workers.start
    workers.stop()
