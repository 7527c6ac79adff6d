"""A million task runs for bench/dashboard.py, with rollups, queue samples and workers to match.

Deterministic (seeded). Runs are spread over the last ``days`` days, newest
last (ids grow with time, as the recorder's inserts do); the rollups are the
sums of exactly those runs per minute, quarter hour and hour (every rollup
table the recorder writes), so the overview's charts and the task list agree.
One workflow is large: a task that fanned out a group of ``GROUP_SIZE``
image resizes a third of the way in (the workflow page of a big group).
PostgreSQL is filled with ``COPY``, SQLite with ``executemany``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections.abc import Iterator
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from taskdeck.models import ALL_TASKS, EVERY_ROLLUP, QueueSample, Rollup, TaskRun, Worker
from taskdeck.monitor import histogram

# name, queue, weight, failure rate, median runtime (s)
TASKS = [
    ("orders.tasks.charge_payment", "high_priority", 20, 0.02, 0.12),
    ("orders.tasks.confirm_order", "medium_priority", 18, 0.001, 0.01),
    ("reports.tasks.collect_sales", "medium_priority", 4, 0.01, 0.8),
    ("reports.tasks.summarize", "medium_priority", 4, 0.0, 0.05),
    ("reports.tasks.render_report", "medium_priority", 4, 0.0, 0.03),
    ("catalog.tasks.resize_image", "default", 25, 0.01, 0.2),
    ("catalog.tasks.publish_gallery", "default", 3, 0.005, 0.05),
    ("catalog.tasks.import_feed", "default", 2, 0.3, 2.5),
    ("notifications:send_email", "notifications", 12, 0.03, 0.3),
    ("notifications:send_sms", "notifications", 6, 0.08, 0.2),
    ("maintenance.tasks.rebuild_search_index", "low_priority", 1.9, 0.01, 5.0),
    ("maintenance.tasks.purge_expired_sessions", "low_priority", 0.1, 0.0, 0.4),
]
WORKERS = {
    "high_priority": ["lanes@web-1", "lanes@web-2"],
    "medium_priority": ["lanes@web-1", "lanes@web-2"],
    "low_priority": ["lanes@web-1", "lanes@web-2"],
    "default": ["default@web-1", "default@web-3"],
    "notifications": ["notifications@web-2"],
}
#: A host retired after the first two days of the week: its runs are all old (the worker filter
#: of a worker still in the menu, offline since).
RETIRED = ("default@web-3", "default@web-old", 2 * 86400)
#: A task renamed, and its queue retired, at the same time (its old name and queue still
#: in the week's runs, in the name and queue filters): new name -> (old name, old queue).
RENAMED = {"notifications:send_sms": ("notifications.tasks.send_sms", "sms")}
EXCEPTIONS = [
    "ValueError('feed URL must be http(s), got {arg!r}')",
    "PaymentGatewayError('gateway timeout charging order {n} (attempt 6)')",
    "ConnectionError('SMTP server smtp.example.com:587 refused the connection')",
    "KeyError('image {n}')",
    "TimeLimitExceeded(300.0)",
]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 453, in trace_task\n'
    "    R = retval = fun(*args, **kwargs)\n"
    '  File "/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 736, in __protected_call__\n'
    "    return self.run(*args, **kwargs)\n"
    '  File "/app/{module}.py", line 31, in {func}\n'
    "    raise {exc}\n"
    "{exc}\n"
)
#: The big workflow: its group id and how many runs it holds.
GROUP_ID = "6b1f2a7e-9c3d-4e5f-8a6b-000000002000"
GROUP_SIZE = 2000

COLUMNS = [
    "task_id", "name", "state", "state_at", "queue", "routing_key", "priority", "worker", "args", "kwargs",
    "result", "exception", "traceback", "retries", "first_seen_at", "sent_at", "received_at", "started_at",
    "finished_at", "wait_time", "runtime", "parent_id", "root_id", "group_id", "reconstructed", "updated_at",
    "payload", "attempts", "lost_worker", "stuck_reason",
]  # fmt: skip


def runs(count: int, days: float, now: dt.datetime, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """``count`` run rows (tuples in COLUMNS order), oldest first; the last few hundred still running."""
    rng = random.Random(seed)
    names = [t[0] for t in TASKS]
    weights = [t[2] for t in TASKS]
    by_name = {t[0]: t for t in TASKS}
    span = days * 86400
    start = now.timestamp() - span
    group_at = count // 3 if count >= 6 * GROUP_SIZE else -GROUP_SIZE - 1
    fanned_out = ""
    for i in range(count):
        name = rng.choices(names, weights)[0]
        in_group = group_at <= i < group_at + GROUP_SIZE
        if in_group:
            name = "catalog.tasks.resize_image"
        _, queue, _, fail_rate, median = by_name[name]
        sent = start + span * (i / count) + rng.random() * 0.5
        wait = rng.lognormvariate(math.log(0.02), 1.0)
        runtime = rng.lognormvariate(math.log(median), 0.6)
        received, started = sent + wait * 0.3, sent + wait
        finished = started + runtime
        left = count - i
        if left <= 50:
            state, finished = "SENT", None
        elif left <= 200:
            state, finished = rng.choice(["RECEIVED", "STARTED"]), None
        else:
            roll = rng.random()
            state = "FAILURE" if roll < fail_rate else "REVOKED" if roll > 0.998 else "SUCCESS"
        n = rng.randrange(1, 100_000)
        arg = f"ftp://feeds{n}.example.com/catalog.xml"
        exception = traceback = result = ""
        if state == "FAILURE":
            exception = rng.choice(EXCEPTIONS).format(arg=arg, n=n)
            module, _, func = name.replace(":", ".tasks.").rpartition(".")
            traceback = TRACEBACK.format(module=module.replace(".", "/"), func=func, exc=exception)
        elif state == "SUCCESS":
            result = f"{{'id': {n}, 'ok': True}}"
        retries = rng.choice([0, 0, 0, 1, 2]) if name.endswith("charge_payment") else 0
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if i == group_at - 1:
            fanned_out = task_id
        worker = rng.choice(WORKERS[queue]) if state != "SENT" else ""
        if sent < start + RETIRED[2]:
            worker = RETIRED[1] if worker == RETIRED[0] else worker
            name, queue = RENAMED.get(name, (name, queue))
        last = finished or (started if state == "STARTED" else received if state == "RECEIVED" else sent)
        yield (
            task_id,
            name,
            state,
            last,
            queue,
            queue,
            0,
            worker,
            f"({n}, {rng.randrange(100, 99999)})",
            "{}" if rng.random() < 0.8 else "{'width': 800}",
            result,
            exception,
            traceback,
            retries,
            _dt(sent),
            _dt(sent),
            _dt(received) if state != "SENT" else None,
            _dt(started) if state not in ("SENT", "RECEIVED") else None,
            _dt(finished) if finished else None,
            round(wait, 6) if state not in ("SENT", "RECEIVED") else None,
            round(runtime, 6) if finished else None,
            fanned_out if in_group else "",
            fanned_out if in_group else task_id,
            GROUP_ID if in_group else "",
            False,
            _dt(last),
            "",  # no payload captured
            "[]",  # COPY writes every column: the model's defaults are Python's, not the table's
            "",
            "",
        )


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def fill(count: int, days: float = 7.0, samples: bool = True) -> dict[str, int]:
    """Empty the monitor's tables and fill them; returns the row count of each."""
    now = timezone.now()
    for model in (TaskRun, *EVERY_ROLLUP, QueueSample, Worker):
        model.objects.all().delete()
    sums = rollup_sums()
    batch: list[tuple[Any, ...]] = []
    for row in runs(count, days, now):
        batch.append(row)
        add_run(sums, row)
        if len(batch) >= 20_000:
            _insert(TaskRun, COLUMNS, batch)
            batch = []
    _insert(TaskRun, COLUMNS, batch)
    write_rollups(sums)
    hosts = sorted({h for hs in WORKERS.values() for h in hs} | {RETIRED[1]})
    retired_at = now - dt.timedelta(days=days) + dt.timedelta(seconds=RETIRED[2])
    Worker.objects.bulk_create(
        Worker(
            hostname=h,
            online=h != RETIRED[1],
            last_heartbeat=now if h != RETIRED[1] else retired_at,
            pool="prefork",
            concurrency=4,
            active=1,
            processed=count // len(hosts),
            loadavg=[0.5, 0.4, 0.3],
        )
        for h in hosts
    )
    if samples:  # two days of samples every 5 s, as SAMPLE_RETENTION keeps them
        rng = random.Random(3)
        step, total = 5, 2 * 86400
        QueueSample.objects.bulk_create(
            (
                QueueSample(
                    sampled_at=now - dt.timedelta(seconds=total - k * step),
                    queue=queue,
                    ready=(depth := rng.randrange(0, 40)),
                    unacked=rng.randrange(0, 4),
                    by_priority={"0": depth // 2, "3": depth - depth // 2, "6": 0, "9": 0},
                    oldest_age=rng.random() * 5 if depth else None,
                )
                for k in range(total // step)
                for queue in WORKERS
            ),
            batch_size=5000,
        )
    return {
        "runs": TaskRun.objects.count(),
        **{
            f"rollups{' of every task' if model in ALL_TASKS.values() else ''} per {model.period_field}": (
                model.objects.count()
            )
            for model in EVERY_ROLLUP
        },
        "samples": QueueSample.objects.count(),
    }


Sums = dict[type[Rollup], dict[tuple[int, str, str], dict[str, Any]]]


def rollup_sums() -> Sums:
    return {model: {} for model in EVERY_ROLLUP}


def add_run(sums: Sums, row: tuple[Any, ...]) -> None:
    """Count a run (a tuple of :func:`runs`) in the row of its period of every rollup table
    (in a table of every task, the row without name and queue)."""
    state, finished = row[2], row[18]
    if finished is None:
        return
    stamp = int(finished.timestamp())
    every_task = ALL_TASKS.values()
    for model, rows in sums.items():
        acc = rows.setdefault(
            (stamp - stamp % model.period, *(("", "") if model in every_task else (row[1], row[4]))),
            {"succeeded": 0, "failed": 0, "revoked": 0, "retried": 0, "runtime": {}, "wait": {}},
        )
        acc[{"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}[state]] += 1
        acc["retried"] += row[13]
        histogram.add(acc["runtime"], histogram.bucket(row[20]))
        histogram.add(acc["wait"], histogram.bucket(row[19]))


def write_rollups(sums: Sums) -> None:
    for model, rows in sums.items():
        model.objects.bulk_create(
            (
                model(
                    **{model.period_field: _dt(start)},
                    name=name,
                    queue=queue,
                    succeeded=acc["succeeded"],
                    failed=acc["failed"],
                    revoked=acc["revoked"],
                    retried=acc["retried"],
                    runtime_hist=acc["runtime"],
                    wait_hist=acc["wait"],
                )
                for (start, name, queue), acc in rows.items()
            ),
            batch_size=5000,
        )


def _insert(model: Any, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    table = model._meta.db_table
    if connection.vendor == "postgresql":
        copy_sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
        return
    ops = connection.ops
    adapted = [
        tuple(ops.adapt_datetimefield_value(v) if isinstance(v, dt.datetime) else v for v in row)
        for row in rows
    ]
    marks = ", ".join(["%s"] * len(columns))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", adapted)
