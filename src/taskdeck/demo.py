"""``taskdeck demo``: send a project's demo workload and report where each task went.

A project names its workload in ``TASKDECK["DEMO"]``, a dotted path to a
function returning :class:`Job` objects (the reference project's is
``core.demo.workload``). Each job sends something (a task, a chain, a group,
a chord) and says how it should end. The demo waits until every task of
every job has finished, then prints one line per task run: the queue the
worker received it from, the worker, the final state, retries and the
outcome; and exits non-zero if any job ended otherwise than expected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from celery import states
from celery.result import AsyncResult, GroupResult, ResultBase
from django.utils.module_loading import import_string

from taskdeck import conf
from taskdeck.errors import ConfigurationError


@dataclass
class Job:
    """Something the demo sends, and the state every task of it should end in."""

    label: str
    send: Callable[[], ResultBase]
    expect: str = states.SUCCESS


@dataclass
class Run:
    """One task run of a job, as it ended."""

    task_id: str
    name: str
    queue: str
    worker: str
    state: str
    retries: int
    outcome: str


def workload() -> list[Job]:
    path = conf.get().get("DEMO")
    if not path:
        raise ConfigurationError('TASKDECK["DEMO"] is not set: name a function returning the demo jobs')
    try:
        return list(import_string(path)())
    except ImportError as exc:
        raise ConfigurationError(f'TASKDECK["DEMO"] = {path!r} cannot be imported: {exc}') from exc


def leaves(result: ResultBase) -> Iterator[AsyncResult]:
    """Every task result of ``result``, in the order they run (chain parents first)."""
    parent = getattr(result, "parent", None)
    if parent is not None:
        yield from leaves(parent)
    if isinstance(result, GroupResult):
        for child in result.results:
            yield from leaves(child)
    elif isinstance(result, AsyncResult):
        yield result


def wait(results: list[AsyncResult], timeout: float) -> bool:
    """Wait until every result is ready; False if ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while not all(r.ready() for r in results):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def describe(result: AsyncResult) -> Run:
    """How one task ended, from the result backend's extended fields."""
    meta = result._get_task_meta()
    value = meta.get("result")
    if result.state == states.FAILURE:
        outcome = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    else:
        outcome = repr(value)
    return Run(
        task_id=result.id,
        name=meta.get("name") or meta.get("task_name") or "?",
        queue=meta.get("queue") or "?",
        worker=meta.get("worker") or "?",
        state=result.state,
        retries=meta.get("retries") or 0,
        outcome=" ".join(outcome.split())[:70],
    )


def run(out: IO[str], timeout: float = 120.0) -> int:
    """Send the workload, wait, print the report; 0 when every job ended as expected."""
    jobs = workload()
    sent: list[tuple[Job, list[AsyncResult]]] = []
    for job in jobs:
        sent.append((job, list(leaves(job.send()))))
        out.write(f"sent  {job.label}\n")
    everything = [r for _, results in sent for r in results]
    out.write(f"\nwaiting for {len(everything)} task runs of {len(jobs)} jobs...\n\n")
    finished = wait(everything, timeout)
    described = [(job, [describe(r) for r in results]) for job, results in sent]
    width = max([34, *(len(r.name) for _, runs in described for r in runs)])
    header = f"{'task':<{width}} {'queue':<16} {'worker':<26} {'state':<8} {'retries':>7}  outcome"
    failed = 0
    for job, runs in described:
        ok = all(r.state == job.expect for r in runs)
        failed += not ok
        out.write(f"{'ok ' if ok else 'BAD'} {job.label} (expected {job.expect})\n")
        out.write(f"    {header}\n")
        for r in runs:
            columns = f"{r.name:<{width}} {r.queue:<16} {r.worker:<26} {r.state:<8} {r.retries:>7}"
            out.write(f"    {columns}  {r.outcome}\n")
        out.write("\n")
    if not finished:
        out.write(f"timed out after {timeout:.0f}s: are workers running for every queue? (taskdeck status)\n")
    out.write(f"{len(jobs) - failed} of {len(jobs)} jobs ended as expected\n")
    return 0 if failed == 0 and finished else 1
