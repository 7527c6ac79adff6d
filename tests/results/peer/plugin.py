"""A pytest plugin for django-celery-results' own unit suite: our backend in place of its own.

``TASKDECK_PEER_BACKEND`` names the backend (:data:`BACKENDS`). The suite's
assertions are left as they are; what changes in its test modules:

- the ``DatabaseBackend`` class they build is ours;
- one shim for the suite itself on Celery 5.7, which the stock backend needs
  too (docs/results.md): its ``Request(..., task="name")`` passes a plain
  string where Celery 5.7 reads ``task.ignore_result``; the string is given
  that attribute (``ignore_result = False``, Celery's default).

Each test's outcome goes to ``TASKDECK_PEER_REPORT`` (JSON lines) for
tests/results/test_peer_suite.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from celery.worker.request import Request


def drained_write_behind() -> type:
    """The write-behind backend, its pending rows written to the table after every store.

    The peer suite reads ``TaskResult`` rows right after storing; a worker's
    flusher would write them some milliseconds later.
    """
    from taskdeck.results.writebehind import WriteBehindBackend

    class DrainedWriteBehindBackend(WriteBehindBackend):
        def _store_result(self, *args: Any, **kwargs: Any) -> Any:
            result = super()._store_result(*args, **kwargs)
            drain(self)
            return result

    return DrainedWriteBehindBackend


def drained_records() -> type:
    """The record backend, its stream read and its result rows written after every store.

    What the recorder does with each batch (taskdeck.monitor.records), less
    the run rows and rollups: the peer's project has no taskdeck tables.
    """
    from taskdeck.results.record import RecordBackend

    class DrainedRecordBackend(RecordBackend):
        def _store_result(self, *args: Any, **kwargs: Any) -> Any:
            result = super()._store_result(*args, **kwargs)
            drain_records(self)
            return result

    return DrainedRecordBackend


def drain_records(backend: Any) -> None:
    from taskdeck.monitor.records import RecordSource, write_results
    from taskdeck.results.record import stream_key

    source = RecordSource(backend.redis(), stream_key(), "peer-suite")
    while records := source.read(1000, 0.001):
        write_results([r.row for r in records if r.row is not None])
        source.ack(records)


def direct() -> type:
    from taskdeck.results.backend import DatabaseBackend

    return DatabaseBackend


def drain(backend: Any) -> None:
    from taskdeck import conf
    from taskdeck.results.flusher import Flusher

    flusher = Flusher(backend.redis(), conf.results(), name="peer-suite")
    try:
        flusher.drain()
    finally:
        flusher.release()


def stock() -> type:
    from django_celery_results.backends.database import DatabaseBackend as Stock

    return Stock


BACKENDS = {
    "stock": stock,
    "direct": direct,
    "write-behind": drained_write_behind,
    "record": drained_records,
}


class TaskName(str):
    """A task name standing in for the task object Celery 5.7's ``Request`` wants."""

    ignore_result = False


class PeerRequest(Request):  # type: ignore[misc]
    def __init__(self, *args: Any, task: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, task=TaskName(task) if isinstance(task, str) else task, **kwargs)


@pytest.fixture(autouse=True)
def taskdeck_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    module = request.module
    if hasattr(module, "DatabaseBackend"):
        monkeypatch.setattr(module, "DatabaseBackend", BACKENDS[os.environ["TASKDECK_PEER_BACKEND"]]())
    if getattr(module, "Request", None) is Request:
        monkeypatch.setattr(module, "Request", PeerRequest)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _report(report.nodeid, report.outcome)


def pytest_collection_finish(session: pytest.Session) -> None:
    with open(os.environ["TASKDECK_PEER_REPORT"], "a") as out:
        out.write(json.dumps({"collected": len(session.items)}) + "\n")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.outcome != "passed":
        _report(report.nodeid, "failed")


def _report(test: str, outcome: str) -> None:
    with open(os.environ["TASKDECK_PEER_REPORT"], "a") as out:
        out.write(json.dumps({"test": test, "outcome": outcome}) + "\n")
