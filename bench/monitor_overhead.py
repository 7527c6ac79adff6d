"""Monitoring's cost: throughput with events + recorder vs plain Celery, recorder lag and memory.

Run (needs Redis and PostgreSQL; not part of `make test`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/taskdeck_bench \\
    .venv/bin/python -m bench monitor --tasks 3000 --rounds 3 --memory-runs 100000,200000

1. Throughput, in one run, same broker (a Redis db of its own), same result
   backend on PostgreSQL, same worker (2 processes), rounds interleaved: N
   noop tasks drained by plain Celery (events off), by Celery with events
   published one by one (Celery's own way, bench/unbatched_settings.py), with
   events in batches (taskdeck.events), and in batches with the recorder
   running. Printed as ratios to plain, round by round.
2. Recorder lag: for every run of the last monitored pass, row write time
   minus the final event's timestamp (p50/p99).
3. Recorder memory: RSS of a recorder data path (RunWriter + every default
   subscriber) fed synthetic events for 0, 100k and 200k runs, in batches as
   the recorder applies them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/13")


def env(events: bool, batched: bool = True) -> dict[str, str]:
    settings = os.environ["DJANGO_SETTINGS_MODULE"] if batched else "bench.unbatched_settings"
    return {
        **os.environ,
        "CELERY_BROKER": REDIS,
        "TASKDECK_EVENTS": "1" if events else "0",
        # Task events are this bench's subject: the direct backend, whose runs they carry
        # (the record backend, the default on Redis, sends none: bench/throughput.py).
        "CELERY_BACKEND": "taskdeck.results.backend:DatabaseBackend",
        "DJANGO_SETTINGS_MODULE": settings,
        "PYTHONPATH": str(ROOT),
    }


def drain(n: int, events: bool, batched: bool = True) -> float:
    """Seconds for a fresh worker to drain ``n`` noop tasks published beforehand."""
    code = f"""
import os, time, django
django.setup()
from celery import current_app
from maintenance.tasks import rebuild_search_index
from django_celery_results.models import TaskResult
TaskResult.objects.all().delete()
with current_app.producer_or_acquire() as producer:
    for i in range({n}):
        rebuild_search_index.apply_async((i,), {{"seconds": 0}}, queue="default", producer=producer)
print("published", flush=True)
"""
    subprocess.run([sys.executable, "-c", code], env=env(events), cwd=ROOT, check=True, capture_output=True)
    from django_celery_results.models import TaskResult

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "core",
            "worker",
            "-Q",
            "default",
            "-c",
            "2",
            "-l",
            "warning",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"bench{int(events)}@%h",
        ],
        env=env(events, batched),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not TaskResult.objects.exists():
            time.sleep(0.01)
        start = time.monotonic()
        while TaskResult.objects.count() < n:
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        worker.terminate()
        worker.wait()


#: The passes of a round: (label, events on, events batched, recorder running).
PASSES = [
    ("plain Celery (events off)", False, True, False),
    ("events, one publish each (Celery's)", True, False, False),
    ("events in batches (taskdeck)", True, True, False),
    ("events in batches + recorder", True, True, True),
]


def throughput(n: int, rounds: int) -> None:
    import redis
    from django_celery_results.models import TaskResult

    from taskdeck.models import TaskRun

    redis.Redis.from_url(REDIS).flushdb()
    rates: dict[str, list[float]] = {label: [] for label, *_ in PASSES}
    ratios: dict[str, list[float]] = {label: [] for label, *_ in PASSES}
    for round_ in range(1, rounds + 1):
        for label, events, batched, with_recorder in PASSES:
            recorder = None
            if with_recorder:
                TaskRun.objects.all().delete()
                TaskResult.objects.all().delete()  # or the recorder would reconstruct earlier passes
                recorder = subprocess.Popen(
                    [sys.executable, "-m", "taskdeck.monitor", "monitor", "-A", "core", "-l", "warning"],
                    env=env(True),
                    cwd=ROOT,
                )
                time.sleep(5)
            rates[label].append(n / drain(n, events, batched))
            if recorder is not None:
                while TaskRun.objects.filter(state="SUCCESS").count() < n:
                    time.sleep(0.2)
                recorder.terminate()
                recorder.wait()
            ratios[label].append(rates[label][-1] / rates[PASSES[0][0]][-1])
            print(f"round {round_}: {label}: {rates[label][-1]:.0f}/s", file=sys.stderr, flush=True)
    lags = sorted(
        (r.updated_at - r.finished_at).total_seconds()
        for r in TaskRun.objects.only("updated_at", "finished_at").filter(
            finished_at__isnull=False, reconstructed=False
        )
    )
    print(f"{n} tasks per pass, {rounds} interleaved round(s); ratio: median of per-round ratios to plain.\n")
    print("| pass | drain tasks/s, median (min-max) | ratio to plain | cost |")
    print("|---|---|---|---|")
    for label, *_ in PASSES:
        ratio = statistics.median(ratios[label])
        spread = f"{statistics.median(rates[label]):.0f} ({min(rates[label]):.0f}-{max(rates[label]):.0f})"
        print(f"| {label} | {spread} | {ratio:.2f} | {1 - ratio:.0%} |")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"\nrecorder lag (final event -> row written): p50 {statistics.median(lags) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms over {len(lags)} runs"
    )


def synthetic(base: float, first: int, runs: int) -> list[dict]:
    """The four events of ``runs`` runs that succeed, as a worker and a producer send them."""
    events = []
    for i in range(first, first + runs):
        t = base + i * 0.01
        uid = f"bench-{i}"
        events += [
            {
                "type": "task-sent",
                "uuid": uid,
                "name": f"bench.task{i % 10}",
                "queue": "default",
                "args": "(1,)",
                "kwargs": "{}",
                "timestamp": t,
            },
            {"type": "task-received", "uuid": uid, "hostname": "w@h", "timestamp": t + 0.001},
            {"type": "task-started", "uuid": uid, "hostname": "w@h", "timestamp": t + 0.002},
            {
                "type": "task-succeeded",
                "uuid": uid,
                "hostname": "w@h",
                "result": "1",
                "runtime": 0.001,
                "timestamp": t + 0.003,
            },
        ]
    return events


def checking(runs: int, rounds: int = 3) -> None:
    """The recorder's apply thread, events/s: batches written as they come vs checked first.

    ``Recorder.write`` is the data path without the check (what the recorder did
    before it checked events); ``Recorder.process`` checks each event
    (taskdeck.monitor.validation) and then writes. Same batches, alternated.
    """
    from taskdeck import conf
    from taskdeck.models import EVERY_ROLLUP, RecorderState, TaskRun, TaskTotal
    from taskdeck.monitor.recorder import Recorder
    from taskdeck.monitor.rollups import Rollups, Totals
    from taskdeck.monitor.runs import RunWriter
    from taskdeck.monitor.validation import check
    from taskdeck.monitor.workers import Workers

    settings = conf.monitor()
    recorder = Recorder(
        source=None,  # type: ignore[arg-type]
        runs=RunWriter(),
        subscribers=[Workers(), Rollups(), Totals(settings["METRICS_BUCKETS"])],
        results=None,
        settings=settings,
    )
    RecorderState.objects.get_or_create(name="default")
    base, batch, first = time.time() - 3600, 250, 10_000_000
    seconds = {"write": 0.0, "process": 0.0}
    check_seconds, events_done = 0.0, 0
    for round_ in range(rounds):
        for model in (TaskRun, *EVERY_ROLLUP, TaskTotal):
            model.objects.all().delete()
        for _ in range(0, runs, batch):
            for step in ("write", "process") if round_ % 2 == 0 else ("process", "write"):
                events = synthetic(base, first, batch)
                first += batch
                began = time.perf_counter()
                getattr(recorder, step)(events)
                seconds[step] += time.perf_counter() - began
            began = time.perf_counter()
            for event in events:
                check(event)
            check_seconds += time.perf_counter() - began
            events_done += len(events)
    write, process = events_done / seconds["write"], events_done / seconds["process"]
    print(f"\nrecorder apply thread, {events_done:,} events per path, batches of {batch * 4}:\n")
    print("| path | events/s |\n|---|---|")
    print(f"| write only (no check) | {write:,.0f} |")
    print(f"| check + write (the recorder) | {process:,.0f} |")
    per_event = check_seconds / events_done * 1e6
    print(f"\nratio {process / write:.2f}; check() alone: {per_event:.1f} µs an event")


def memory(points: list[int]) -> None:
    from django.db import reset_queries

    from taskdeck import conf
    from taskdeck.models import EVERY_ROLLUP, TaskRun, TaskTotal
    from taskdeck.monitor.merge import fact_from_event
    from taskdeck.monitor.rollups import Rollups, Totals
    from taskdeck.monitor.runs import RunWriter
    from taskdeck.monitor.workers import Workers

    for model in (TaskRun, *EVERY_ROLLUP, TaskTotal):
        model.objects.all().delete()
    writer, subs = RunWriter(), [Workers(), Rollups(), Totals(conf.monitor()["METRICS_BUCKETS"])]
    base = time.time() - 3600
    done, batch = 0, 250  # 250 runs x 4 events = the recorder's 1000-event batch
    print("\n| runs recorded | recorder RSS (MiB) |\n|---|---|")
    for target in [0, *points]:
        while done < target:
            events = synthetic(base, done, batch)
            changes = writer.apply([f for e in events if (f := fact_from_event(e))])
            for sub in subs:
                sub.on_events(events)
                sub.on_changes(changes)
            reset_queries()  # as the recorder does after each batch
            done += batch
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {target:,} | {rss:.0f} (peak) |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-runs", default="100000,200000")
    parser.add_argument("--check-runs", type=int, default=5000, help="runs per round of the check bench")
    parser.add_argument("--only-check", action="store_true", help="only the recorder's check bench")
    args = parser.parse_args()
    import django

    django.setup()
    if not args.only_check:
        throughput(args.tasks, args.rounds)
        memory([int(x) for x in args.memory_runs.split(",") if x])
    checking(args.check_runs)


if __name__ == "__main__":
    main()
