"""The recorder process, for the monitor's tests (workers and services: tests/conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from tests.support.services import ARTIFACTS, Proc, wait_for


@pytest.fixture
def start_recorder(
    services_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Callable[[], Proc]]:
    from taskdeck.models import RecorderState

    procs: list[Proc] = []

    def start() -> Proc:
        args = [sys.executable, "-m", "taskdeck.monitor", "monitor", "-A", "core"]
        proc = Proc(args, services_env, ARTIFACTS / f"{request.node.name}-recorder-{len(procs)}.log")
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
