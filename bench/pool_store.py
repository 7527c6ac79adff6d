"""What storing a result costs a pool process, per backend: Celery's tracer for a noop, in process.

Run (needs Redis and PostgreSQL on 127.0.0.1; not part of ``make test``)::

    .venv/bin/python -m bench store                   # 5,000 tasks, 3 rounds
    .venv/bin/python -m bench store --tasks 20000 --rounds 5

A worker's pool process runs each task through Celery's tracer
(``celery.app.trace.build_tracer``), which stores its states in the result
backend: STARTED (``CELERY_TASK_TRACK_STARTED``, as the notes and the preset
set it) and the final state. This bench runs that tracer in one process per
backend, on the reference project's settings with ``CELERY_BACKEND`` set,
for a noop task that stores its result and for the same noop with
``ignore_result=True`` (what bare Celery pays: no backend call at all). It
prints the CPU time of the process per task (``time.process_time()``:
Python and the system calls of its round trips) and the wall time, and the
stored task's CPU as a ratio to the ignored one's, side by side for
Celery's own backends (its Redis backend; django-celery-results'
``django-db``) and taskdeck's (the direct upsert, write-behind, the record).

What it leaves out, by design: the worker's main process (receiving, acks,
the pool's pipes), the broker, and the database server's or Redis' own CPU
(``python -m bench profile`` measures those, process by process). A backend
whose store waits on a server shows it in the wall time only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: (label, CELERY_BACKEND): ``{redis}`` is the bench's Redis database.
BACKENDS = (
    ("Celery's Redis backend", "{redis}"),
    ("django-celery-results django-db (PostgreSQL)", "django-db"),
    ("taskdeck direct upsert (PostgreSQL)", "taskdeck.results.backend:DatabaseBackend"),
    ("taskdeck write-behind (Redis, then PostgreSQL)", "taskdeck.results.writebehind:WriteBehindBackend"),
    ("taskdeck record (Redis stream; the Redis preset)", "taskdeck.results.record:RecordBackend"),
)


def noop() -> None:
    return None


def child(tasks: int) -> None:
    """In a process of its own: the tracer for both noops, ``tasks`` runs each; prints JSON."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from celery.app.trace import build_tracer, setup_worker_optimizations

    from core.celery_app import app

    app.task(name="bench.store.noop")(noop)
    app.task(name="bench.store.ignored", ignore_result=True)(noop)
    setup_worker_optimizations(app)
    out: dict[str, Any] = {"backend": type(app.backend).__name__}
    for name in ("bench.store.ignored", "bench.store.noop"):
        tracer = build_tracer(name, app.tasks[name], app=app, hostname="bench@store")

        def run(tracer: Any = tracer, name: str = name) -> None:
            task_id = str(uuid.uuid4())
            request = {
                "id": task_id,
                "task": name,
                "delivery_info": {"routing_key": "default", "priority": 0, "exchange": ""},
                "hostname": "bench@store",
                "argsrepr": "()",
                "kwargsrepr": "{}",
                "taskdeck_sent": time.time(),
            }
            tracer(task_id, (), {}, request)

        for _ in range(min(500, tasks)):  # connections made, scripts loaded, caches warm
            run()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(tasks):
            run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        out[name.rsplit(".", 1)[1]] = {"cpu_us": cpu / tasks * 1e6, "wall_us": wall / tasks * 1e6}
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.tasks)
        return

    from bench.results import base_env, databases, machine, redis_db

    figures: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in BACKENDS}
    with redis_db() as redis_url, databases() as urls:
        print(f"load average before: {os.getloadavg()}")
        for r in range(args.rounds):
            for label, backend in BACKENDS:
                env = {
                    **base_env(),
                    "DJANGO_SETTINGS_MODULE": "core.settings",
                    "DATABASE_URL": urls["postgresql"],
                    "CELERY_BROKER": redis_url,
                    "CELERY_BACKEND": backend.format(redis=redis_url),
                }
                done = subprocess.run(
                    [sys.executable, "-m", "bench.pool_store", "--child", "--tasks", str(args.tasks)],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                )
                if done.returncode:
                    raise SystemExit(f"{label}: the pass failed\n{done.stderr[-3000:]}")
                figures[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
                got = figures[label][-1]
                print(
                    f"round {r + 1} {label}: ignored {got['ignored']['cpu_us']:.0f} us, "
                    f"stored {got['noop']['cpu_us']:.0f} us CPU ({got['noop']['wall_us']:.0f} us wall)"
                )
        print(f"load average after: {os.getloadavg()}\n")
    print(f"{args.tasks} noop tasks a pass through Celery's tracer, {args.rounds} rounds, medians\n")
    print(
        "| result backend | results ignored: CPU µs/task | results stored: CPU µs/task | wall µs/task "
        "| stored / ignored (CPU) | the store's CPU µs/task |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, _ in BACKENDS:
        runs = figures[label]
        ignored = statistics.median(f["ignored"]["cpu_us"] for f in runs)
        stored = statistics.median(f["noop"]["cpu_us"] for f in runs)
        wall = statistics.median(f["noop"]["wall_us"] for f in runs)
        ratio = statistics.median(f["noop"]["cpu_us"] / f["ignored"]["cpu_us"] for f in runs)
        cells = f"{ignored:.0f} | {stored:.0f} | {wall:.0f} | {ratio:.1f}x | {stored - ignored:.0f}"
        print(f"| {label} | {cells} |")
    print("\n" + "\n".join(f"- {line}" for line in machine()))


if __name__ == "__main__":
    main()
