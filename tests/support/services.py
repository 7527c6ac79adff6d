"""Helpers for tests that drive real processes: polling, subprocesses, broker pools."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import current_app

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
REDIS = os.environ.get("TASKDECK_TEST_REDIS", "redis://127.0.0.1:6379")
RABBITMQ = os.environ.get("TASKDECK_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 60, what: str | Callable[[], str] = "condition"
) -> Any:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` (or what it returns) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(0.2)


def trickled_batches(send: Callable[[], str], count: int = 10, gap: float = 0.03) -> set[Any]:
    """The batches a running recorder wrote ``count`` runs in, sent ``gap`` seconds apart.

    ``send`` sends what makes one run (a record, an event) and returns its task
    id; one is sent and written first, so the recorder is past its start. Each
    batch stamps its runs' ``updated_at`` once: the distinct stamps, one per batch.
    """
    from taskdeck.models import TaskRun

    first = send()
    wait_for(lambda: TaskRun.objects.filter(task_id=first).exists(), 60, "the recorder to write a run")
    ids = []
    for _ in range(count):
        ids.append(send())
        time.sleep(gap)
    runs = TaskRun.objects.filter(task_id__in=ids)
    wait_for(lambda: runs.count() == len(ids), 60, f"the {count} runs")
    return set(runs.values_list("updated_at", flat=True))


def reset_pools() -> None:
    """Forget this process's connections, made to another broker URL."""
    app = current_app._get_current_object()
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None


class Proc:
    """A subprocess of the test whose output goes to a log file under tests/artifacts."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log: Path,
        cwd: Path = ROOT,
        *,
        append: bool = False,
        new_session: bool = False,
    ) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.hostname = ""
        self._out = log.open("ab" if append else "wb")
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=new_session
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
