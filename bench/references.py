"""Reference rows of ``python -m bench throughput``: Dramatiq and Huey on the same Redis.

How far the fastest Python task queues are from bare Celery and the taskdeck
stack, measured in the same run: the same noop task, the same claimed Redis
database (emptied before each pass), two worker processes, each queue's own
defaults otherwise (apps: bench/dramatiq_noop.py, bench/huey_noop.py).

- Dramatiq: ``dramatiq --processes 2``, each process with its default 8
  worker threads (with 1 thread it drained 500/s where 8 gave 2,500/s: its
  consumer holds at most twice the thread count and, when full, polls with
  a back-off); its Redis broker acks after the task and keeps each message
  until then.
- Huey: ``huey_consumer -k process -w 2``; it takes a message off its list
  before running it (acks on receipt, as bare Celery does).

Each pass is timed as the Celery rows are: **enqueue**, N publishes from one
process (``actor.send()``, ``task()``); **drain**, a fresh worker on the N
queued messages, from the first message taken to the queue's list empty,
with the worker's CPU (every process of it) per task. No round trip: neither
stores a ``None`` result by default. The libraries come with the ``bench``
extra; a reference that cannot run (not installed, no start, a timeout)
gets its row marked with why, and the bench goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.workers import child_env, running, wait_until


@dataclass(frozen=True)
class Reference:
    label: str
    module: str  # the app, imported by the client and the worker
    queue_key: str  # the Redis list of waiting message ids or bodies
    worker: tuple[str, ...]  # argv after ``python -m``

    def argv(self) -> list[str]:
        return [sys.executable, "-m", *self.worker]


REFERENCES = {
    "dramatiq": Reference(
        "Dramatiq (reference: 2 processes of 8 threads, its default)",
        "bench.dramatiq_noop",
        "dramatiq:bench",
        ("dramatiq", "bench.dramatiq_noop", "--processes", "2"),
    ),
    "huey": Reference(
        "Huey (reference: 2 worker processes)",
        "bench.huey_noop",
        "huey.redis.bench",
        ("huey.bin.huey_consumer", "bench.huey_noop.huey", "-k", "process", "-w", "2", "-q"),
    ),
}


def one_pass(row: Any, url: str, database_url: str, args: argparse.Namespace) -> None:
    """One pass of a reference row (``row`` is bench.throughput's Row); a failure is noted on the row."""
    try:
        _one_pass(row, url, args)
    except (Exception, SystemExit) as exc:  # a reference never stops the bench
        text = str(exc).strip()
        row.errors.append(text.splitlines()[-1] if text else type(exc).__name__)
        print(f"{row.key} failed: {row.errors[-1]} (logs in {args.logs})", file=sys.stderr, flush=True)


def _one_pass(row: Any, url: str, args: argparse.Namespace) -> None:
    import redis

    from bench.results import machine_cpu, tree_cpu
    from bench.throughput import subprocess_run

    ref = REFERENCES[row.key]
    env = child_env(BENCH_REDIS=url)
    log = args.logs / f"throughput-{row.broker}-{row.key}.log"
    client = redis.Redis.from_url(url)
    n = args.tasks
    out = subprocess_run([sys.executable, "-m", "bench.references", row.key, str(n)], env)
    row.enqueue.append(json.loads(out))
    if (waiting := client.llen(ref.queue_key)) != n:
        raise RuntimeError(f"published {n}, found {waiting} in {ref.queue_key}")
    with running(ref.argv(), env, log) as proc:
        wait_until(lambda: client.llen(ref.queue_key) < n, 120, f"{row.key} to start", [proc], log)
        start, cpu, worker_cpu = time.monotonic(), machine_cpu(), tree_cpu(proc.pid)
        wait_until(lambda: client.llen(ref.queue_key) == 0, 600, f"{row.key} to drain", [proc], log)
        elapsed = time.monotonic() - start
        row.cpu.append((tree_cpu(proc.pid) - worker_cpu) * 1000 / n)
    busy, total = (b - a for a, b in zip(cpu, machine_cpu(), strict=True))
    row.drain.append(n / elapsed)
    row.busy.append(busy / total if total else 0.0)


def enqueue(key: str, n: int) -> float:
    """Inside the reference's environment: publish N noop messages; tasks per second."""
    from importlib import import_module

    app = import_module(REFERENCES[key].module)
    send = app.noop.send if key == "dramatiq" else app.noop
    send()  # connecting (and Dramatiq declaring its queue) is not enqueueing
    if key == "dramatiq":
        app.broker.flush_all()
    else:
        app.huey.flush()
    start = time.perf_counter()
    for _ in range(n):
        send()
    return n / (time.perf_counter() - start)


if __name__ == "__main__":
    print(json.dumps(enqueue(sys.argv[1], int(sys.argv[2]))))
