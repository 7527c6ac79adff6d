"""Fixtures of the fault tests: workers they can kill, brokers and databases of their own, reports.

Workers run ``tests.faults.worker_settings`` (the project's settings with a
visibility timeout of a few seconds) with the ledger loaded
(:mod:`tests.support.ledger`), which records every completed execution in
the test's own Redis database, outside whatever the test breaks.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import WORKER_SETTINGS, Process, RedisServer, Worker
from tests.support.ledger import Ledger
from tests.support.services import ARTIFACTS, wait_for


@pytest.fixture
def ledger(broker: str) -> Ledger:
    """The executions workers completed, in this test's Redis database (emptied for the test)."""
    return Ledger(broker)


@pytest.fixture
def faults_env(services_env: dict[str, str], ledger: Ledger) -> dict[str, str]:
    """A worker's environment: this test's broker and database, the fault settings, the ledger."""
    return {**services_env, "DJANGO_SETTINGS_MODULE": WORKER_SETTINGS, **ledger.env}


@pytest.fixture
def workers(faults_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Callable[..., Worker]]:
    """Start a worker (``env`` overrides ``faults_env``); waits until it answers ping unless told not to."""
    started: list[Worker] = []

    def start(env: dict[str, str] | None = None, wait: bool = True, **kwargs: Any) -> Worker:
        worker = Worker({**faults_env, **(env or {})}, request.node.name, **kwargs)
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short temporary folder (unix socket paths are limited to 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="tdf-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_servers(scratch: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start Redis servers of the test's own; all are stopped afterwards."""
    servers: list[RedisServer] = []

    def start(name: str = "redis", **kwargs: Any) -> RedisServer:
        server = RedisServer(scratch / name, name=name, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def recorders(faults_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Callable[..., Process]]:
    """Start ``python -m taskdeck.monitor monitor -A core``; waits until it has a heartbeat."""
    from taskdeck.models import RecorderState

    started: list[Process] = []

    def start(env: dict[str, str] | None = None) -> Process:
        argv = [sys.executable, "-m", "taskdeck.monitor", "monitor", "-A", "core"]
        log = ARTIFACTS / f"{request.node.name}-recorder-{len(started)}.log"
        proc = Process(argv, {**faults_env, **(env or {})}, log)
        started.append(proc)
        wait_for(
            lambda: (
                not proc.alive()
                or RecorderState.objects.filter(pid=proc.pid).exclude(heartbeat_at=None).exists()
            ),
            90,
            f"the recorder to listen ({log})",
        )
        assert proc.alive(), f"recorder exited, see {log}"
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def netns() -> Iterator[Any]:
    """A second host: a network namespace of the test's own, removed afterwards even if the test failed."""
    from tests.faults.harness import Namespace

    ns = Namespace()
    yield ns
    ns.close()
