"""The recorder's cost per run when each run's task-sent event and record are written in one batch, or apart.

Run (needs Redis and PostgreSQL; not part of `make test`):

    .venv/bin/python -m bench batch --runs 3000 --rounds 3

With the record backend a run reaches the recorder twice: its producer's
task-sent event (on the broker) and its record (the Redis stream). Written
apart (the recorder before 2026-12-02), a run's SENT row is written from the
event, then read again and rewritten from the record; written together
(``Recorder.write_batch``), once. A steady flow of short tasks brings a run's
two halves in the same turn of the recorder's loop; a backlog of queued
tasks does not (their events come long before their records).

This bench drives the recorder's own code in this process on the real stream
and a real PostgreSQL database (``taskdeck_bench_batch``, made and dropped
here): ``--runs`` runs' records written as worker processes write them
(``bench.capacity.store_run``: some retried, some failed), their task-sent
events buffered as the capture thread holds them; then the recorder's loop
until the stream is empty, ``together`` (one turn takes a batch of records and
the events waiting) and ``apart`` (the events' batches, then the records'),
rounds interleaved, every table emptied before each pass. Printed: runs per
second, and the CPU per run of this process (the recorder) and of its
PostgreSQL backend.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "taskdeck_bench_batch"
SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


class Buffered:
    """A recorder's event source: the events its capture thread has buffered, handed out in batches."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = list(events)
        self.ready = threading.Event()

    def batch(self, size: int, wait: float, linger: float = 0.0) -> list[dict[str, Any]]:
        out, self.events = self.events[:size], self.events[size:]
        return out


def sent_event(host: str, i: int, at: float) -> dict[str, Any]:
    """The task-sent event the producer of run ``i`` of ``host`` publishes (bench.capacity's runs)."""
    from bench.capacity import expected

    run = expected(host, i)
    return {
        "type": "task-sent",
        "uuid": run["task_id"],
        "name": run["name"],
        "queue": run["queue"],
        "routing_key": run["queue"],
        "args": f"({i}, 0)",
        "kwargs": "{'size': 'small'}",
        "timestamp": at,
    }


def recorder(client: Any, events: list[dict[str, Any]]) -> Any:
    """A recorder as :func:`taskdeck.monitor.recorder.build` wires its data path (no sampling, no
    inspection: those run on their own intervals), reading ``client``'s stream."""
    from taskdeck import conf, deadletter
    from taskdeck.monitor.recorder import Recorder
    from taskdeck.monitor.records import RecordSource
    from taskdeck.monitor.rollups import Rollups, Totals
    from taskdeck.monitor.runs import RunWriter
    from taskdeck.monitor.workers import Workers
    from taskdeck.results.record import stream_key

    s = conf.monitor()
    return Recorder(
        source=Buffered(events),  # type: ignore[arg-type]
        runs=RunWriter(),
        subscribers=[Workers(misses=s["HEARTBEAT_MISSES"]), Rollups(), Totals(s["METRICS_BUCKETS"])],
        results=None,
        settings=s,
        dead_letter=deadletter.store,
        records=RecordSource(client, stream_key(), "bench@batch"),
    )


def one_pass(client: Any, backend: Any, runs: int, mode: str) -> dict[str, float]:
    from django.db import connection
    from django_celery_results.models import TaskResult

    from bench.capacity import cpu_seconds, host_name, store_run
    from taskdeck.models import EVERY_ROLLUP, TaskRun, TaskTotal
    from taskdeck.results.record import stream_key

    for model in (TaskRun, TaskResult, *EVERY_ROLLUP, TaskTotal):
        model.objects.all().delete()
    client.delete(stream_key())
    host = host_name(0)
    now = time.time()
    for i in range(runs):
        store_run(backend, host, i)
    events = [sent_event(host, i, now + i / 1000) for i in range(runs)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]
    rec = recorder(client, [] if mode == "apart" else events)
    size = rec.settings["BATCH_SIZE"]
    t0, cpu0, db0 = time.perf_counter(), time.process_time(), cpu_seconds(backend_pid)
    if mode == "apart":
        while events:
            rec.process(events[:size])
            events = events[size:]
    while rec.pump_records(0) or rec.source.events:
        pass
    wall, cpu, db = time.perf_counter() - t0, time.process_time() - cpu0, cpu_seconds(backend_pid) - db0
    assert client.xlen(stream_key()) == 0 and TaskRun.objects.count() == runs
    return {"runs_s": runs / wall, "recorder_ms": cpu / runs * 1000, "db_ms": db / runs * 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import psycopg

    from bench.results import machine, redis_db

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with redis_db() as url:
        run(args, url)
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    print("\n".join(f"- {line}" for line in machine()))


def run(args: argparse.Namespace, url: str) -> None:
    os.environ.update(
        DATABASE_URL=f"{SERVER}/{DATABASE}",
        CELERY_BROKER=url,
        CELERY_BACKEND="taskdeck.results.record:RecordBackend",
        DJANGO_SETTINGS_MODULE="core.settings",
        DJANGO_DEBUG="0",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import redis
    from celery import current_app
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(url)
    backend = current_app.backend
    figures: dict[str, list[dict[str, float]]] = {"apart": [], "together": []}
    print(f"load average before: {os.getloadavg()}")
    for r in range(args.rounds):
        for mode in ("apart", "together"):
            figures[mode].append(one_pass(client, backend, args.runs, mode))
            print(
                f"round {r + 1} {mode:8s} " + "  ".join(f"{k} {v:.2f}" for k, v in figures[mode][-1].items())
            )
    print(f"load average after: {os.getloadavg()}\n")
    print(
        f"{args.runs} runs per pass (records and task-sent events), {args.rounds} rounds, median (min-max)\n"
    )
    print("| written | runs/s | recorder CPU ms/run | PostgreSQL CPU ms/run |")
    print("|---|---:|---:|---:|")
    for mode in ("apart", "together"):
        cells = []
        for key in ("runs_s", "recorder_ms", "db_ms"):
            values = [f[key] for f in figures[mode]]
            fmt = "{:.0f}" if key == "runs_s" else "{:.3f}"
            low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
            cells.append(f"{mid} ({low}-{high})")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    ratio = statistics.median(f["runs_s"] for f in figures["together"]) / statistics.median(
        f["runs_s"] for f in figures["apart"]
    )
    print(f"\ntogether / apart: {ratio:.2f}x runs/s\n")
    from django.db import connections

    connections.close_all()


if __name__ == "__main__":
    main()
