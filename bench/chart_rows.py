"""Cold chart data by rollup table, and what writing the coarse tables costs the recorder.

A smaller companion of bench/dashboard.py for the chart endpoint alone. Run
(not part of ``make test``)::

    .venv/bin/python -m bench.chart_rows                     # SQLite in a temporary folder
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/taskdeck_bench_charts .venv/bin/python -m bench.chart_rows

1. Charts: the rollups of bench/dashboard_data.py's million runs over 7 days
   (every table, no runs), then ``window_series`` for 1 h, 6 h, 24 h and 7 d
   with the cache emptied before each call, reading the per-minute rows (as
   before the coarse tables), the coarse table per task name and queue it
   picks (as before the tables of every task), and that table's rows of every
   task (as it reads now). Printed: rows read and p50/p95 in ms. No HTTP
   request around it (bench/dashboard.py measures whole requests).
2. Recorder: the rollups subscriber fed batches of 250 finished runs (the
   recorder's 1,000-event batch), writing the per-minute table only, then
   every table per task name and queue, then every table; p50/p95 ms per batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WINDOWS = (("1h", 3600), ("6h", 6 * 3600), ("24h", 86400), ("7d", 7 * 86400))


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:.1f} | {p95 * 1000:.1f}"


def charts(rows: int, repeat: int) -> None:
    from django.core.cache import caches
    from django.utils import timezone

    from bench import dashboard_data
    from taskdeck import conf
    from taskdeck.models import ALL_TASKS, EVERY_ROLLUP, TaskRollup
    from taskdeck.monitor import series

    now = timezone.now()
    for model in EVERY_ROLLUP:
        model.objects.all().delete()
    sums = dashboard_data.rollup_sums()
    for run in dashboard_data.runs(rows, 7.0, now):
        dashboard_data.add_run(sums, run)
    dashboard_data.write_rollups(sums)
    print(", ".join(f"{m.__name__}: {m.objects.count():,} rows" for m in EVERY_ROLLUP))
    cache = caches[conf.monitor()["SERIES_CACHE"]]
    print("\n| window | table | rows read | p50 ms | p95 ms |\n|---|---|---:|---:|---:|")
    for label, window in WINDOWS:
        step = series.step_for(window)
        coarse = series.table_for(step)
        for model in dict.fromkeys((TaskRollup, coarse, ALL_TASKS[coarse])):
            end = math.ceil(now.timestamp() / step) * step  # the window's buckets, as window_series cuts them
            since = dt.datetime.fromtimestamp(end - math.ceil(window / step) * step, dt.UTC)
            read = model.objects.window(since).count()
            samples = []
            # The table of every task read in place of the one table_for gives: ``model`` itself.
            with (
                mock.patch.object(series, "table_for", lambda step, model=model: model),
                mock.patch.object(series, "ALL_TASKS", {model: model}),
            ):
                for _ in range(repeat):
                    cache.clear()
                    started = time.perf_counter()
                    series.window_series(window, now=now)
                    samples.append(time.perf_counter() - started)
            print(f"| {label} | {model.__name__} | {read:,} | {ms(samples)} |", flush=True)


def recorder(batches: int) -> None:
    from taskdeck.models import EVERY_ROLLUP, ROLLUPS, TaskRollup
    from taskdeck.monitor import rollups
    from taskdeck.monitor.subscribers import RunChange

    base = time.time() - 86400
    names = [f"bench.task{i}" for i in range(12)]

    def batch(n: int) -> list[RunChange]:
        out = []
        for i in range(n * 250, (n + 1) * 250):
            t = base + i * 0.01  # 100 runs a second
            row: dict[str, Any] = {
                "state": "FAILURE" if i % 50 == 0 else "SUCCESS",
                "finished_ts": t,
                "name": names[i % len(names)],
                "queue": "default",
                "runtime": 0.001 * (1 + i % 300),
                "wait_time": 0.01,
                "retries": 0,
            }
            out.append(RunChange(before=None, after=row))
        return out

    print("\n| tables written | p50 ms | p95 ms (per batch of 250 runs) |\n|---|---:|---:|")
    for tables in ((TaskRollup,), ROLLUPS, EVERY_ROLLUP):
        for model in EVERY_ROLLUP:
            model.objects.all().delete()
        subscriber = rollups.Rollups()
        samples = []
        with mock.patch.object(rollups, "EVERY_ROLLUP", tables):
            for n in range(batches):
                changes = batch(n)
                started = time.perf_counter()
                subscriber.on_changes(changes)
                samples.append(time.perf_counter() - started)
        print(f"| {', '.join(m.__name__ for m in tables)} | {ms(samples)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.gettempdir()) / "taskdeck-bench-charts"
    folder.mkdir(exist_ok=True)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{folder}/db.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    os.environ["DJANGO_DEBUG"] = "0"
    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    call_command("migrate", verbosity=0)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{connection.vendor}: {connection.settings_dict['NAME']}; {os.cpu_count()} CPUs, load {load}")
    charts(args.rows, args.repeat)
    recorder(args.batches)


if __name__ == "__main__":
    main()
