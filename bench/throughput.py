"""Throughput: plain Celery against the taskdeck stack, side by side on the same broker, as ratios.

Run (needs Redis, RabbitMQ with ``rabbitmqctl``, and PostgreSQL on 127.0.0.1;
not part of ``make test``)::

    .venv/bin/python -m bench throughput            # 2000 noop tasks, 2 rounds, Redis and RabbitMQ
    .venv/bin/python -m bench throughput --quick    # a smoke run

Rows, each with a worker ``-P prefork -c 2`` of its own, on a broker of its own
(the claimed Redis database emptied, or a fresh RabbitMQ vhost):

- ``bare``: Celery as it comes (bench/bare_defaults.py): no Django, prefetch 4,
  acks on receipt, no events, results ignored. Every ratio is to this row.
- ``bare + taskdeck worker settings``: the same app with late acks and
  prefetch 1 (bench/bare.py), what taskdeck's priority defaults cost alone.
- ``taskdeck``: the reference project as shipped (``-A core``, no backend
  named): on Redis one record per task run (``taskdeck.results.record``: no
  worker task events, the recorder writes results, runs and rollups from the
  records' stream); on RabbitMQ the direct backend (results in PostgreSQL)
  with task events. The recorder (``taskdeck monitor``) runs beside it.
- ``taskdeck-off``: the same with no recorder running: what monitoring costs.
- ``taskdeck-direct``: the direct backend with task events (Redis; on
  RabbitMQ it is the row as shipped); ``taskdeck-wb``: the write-behind
  backend (Redis only).
- ``taskdeck-rec`` (RabbitMQ only): one record per task run, the stream in
  the bench's Redis (``TASKDECK_RESULTS_REDIS_URL``).
- ``dramatiq``, ``huey`` (Redis only): the same noop on Dramatiq and Huey,
  two worker processes each, as references (bench/references.py); a
  reference that cannot run is marked with why, and the bench goes on.

Taskdeck rows also print the recorder's lag: for every run of the pass, the
time from its end (``finished_at``) to its run row's last write
(``updated_at``), p99 over the passes. The recorder is started, and has
beaten its first heartbeat, before the first task is sent, as a recorder
that runs all the time would be.

``--rows bare,taskdeck,huey`` runs a subset (bare always). For each:
**enqueue** — N noop tasks published by the row's own app in one process, as
``task.delay()`` sends them (a producer from the app's pool per task;
its publisher, sent events included); **drain** — a fresh worker started
on the N queued messages, timed from the first message taken to the last
(the queue's ready count, read from the broker); **round trip** —
sequential ``send_task(...).get()`` against the running worker (bare rows
ask for a result with ``ignore_result=False`` from Celery's own backend for
the broker: Redis, or ``rpc://`` on RabbitMQ). Rounds are interleaved so a
burst of load from elsewhere hits every row alike; medians are printed with
the spread, and the machine's busy share during each drain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.client import QUEUE, TASK
from bench.references import REFERENCES
from bench.workers import ROOT, child_env, running, wait_until, worker_argv


@dataclass
class Row:
    key: str
    label: str
    broker: str
    enqueue: list[float] = field(default_factory=list)  # tasks/s
    drain: list[float] = field(default_factory=list)  # tasks/s
    busy: list[float] = field(default_factory=list)  # machine CPU busy share during the drain
    cpu: list[float] = field(default_factory=list)  # worker CPU ms per task, all its processes
    latencies: list[float] = field(default_factory=list)  # seconds, every round pooled
    errors: list[str] = field(default_factory=list)  # why a reference row's pass did not run
    lags: list[float] = field(default_factory=list)  # recorder lag per run, seconds, every round pooled


ROWS = {
    "bare": "bare Celery (defaults, results ignored)",
    "bare-knobs": "bare Celery + taskdeck's worker settings (acks late, prefetch 1)",
    "taskdeck": "taskdeck stack as shipped, recorder running",
    "taskdeck-off": "taskdeck stack as shipped, recorder stopped (what monitoring costs)",
    "taskdeck-direct": "taskdeck stack, direct results in PostgreSQL, events, recorder",
    "taskdeck-wb": "taskdeck stack, write-behind results (Redis only)",
    **{key: ref.label for key, ref in REFERENCES.items()},
    "taskdeck-rec": "taskdeck stack, one record per run, the stream in the bench's Redis",
}
#: Rows a broker cannot run, or that repeat another: write-behind keeps results in
#: the broker's Redis; the other queues (bench/references.py) are measured on
#: Redis; on Redis the stack as shipped is the record row.
SKIP = {
    ("rabbitmq", "taskdeck-wb"),
    ("redis", "taskdeck-rec"),
    *(("rabbitmq", key) for key in REFERENCES),
}
WRITE_BEHIND = "taskdeck.results.writebehind:WriteBehindBackend"
RECORD = "taskdeck.results.record:RecordBackend"
DIRECT = "taskdeck.results.backend:DatabaseBackend"
#: The rows of the reference project (``-A core``); every one but ``taskdeck-off`` runs the recorder.
STACK = ("taskdeck", "taskdeck-off", "taskdeck-direct", "taskdeck-wb", "taskdeck-rec")


def runs_recorder(key: str) -> bool:
    """Whether the row ``key`` runs the recorder beside its worker."""
    return key in STACK and key != "taskdeck-off"


APPS = {"bare": "bench.bare_defaults", "bare-knobs": "bench.bare", **dict.fromkeys(STACK, "core")}
CLIENT_APPS = {
    "bare": "bench.bare_defaults:app",
    "bare-knobs": "bench.bare:app",
    **dict.fromkeys(STACK, "core.celery_app:app"),
}


def result_backend(broker_url: str) -> str:
    """Celery's own result backend on this broker, for the bare rows' round trips."""
    return broker_url if broker_url.startswith("redis") else "rpc://"


def row_env(key: str, broker_url: str, database_url: str, tmp: Path, redis_url: str = "") -> dict[str, str]:
    if key in STACK:
        # "taskdeck" and "taskdeck-off": the project's own backend and event settings.
        backend: dict[str, str] = {
            "taskdeck-direct": {"CELERY_BACKEND": DIRECT, "TASKDECK_EVENTS": "1"},
            "taskdeck-wb": {"CELERY_BACKEND": WRITE_BEHIND, "TASKDECK_EVENTS": "1"},
            "taskdeck-rec": {"CELERY_BACKEND": RECORD, "TASKDECK_RESULTS_REDIS_URL": redis_url},
        }.get(key, {})
        return child_env(
            CELERY_BROKER=broker_url,
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="core.settings",
            TASKDECK_DATA_DIR=str(tmp),
            **backend,
        )
    return child_env(CELERY_BROKER=broker_url, BENCH_RESULT_BACKEND=result_backend(broker_url))


def client(key: str, env: dict[str, str], command: str, n: int) -> Any:
    out = subprocess_run(
        [sys.executable, "-m", "bench.throughput", "client", CLIENT_APPS[key], command, str(n)], env
    )
    return json.loads(out)


def subprocess_run(argv: list[str], env: dict[str, str]) -> str:
    import subprocess

    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def client_main(app_path: str, command: str, n: int) -> None:
    """Inside the row's environment: time N publishes, or N round trips; print JSON."""
    import os

    from kombu.utils.imports import symbol_by_name

    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    app = symbol_by_name(app_path)
    if os.environ.get("BENCH_RESULT_BACKEND"):
        app.conf.result_backend = os.environ["BENCH_RESULT_BACKEND"]
    if command == "enqueue":
        from bench.client import publish

        with app.connection_for_write() as conn:
            conn.ensure_connection()  # connecting is not enqueueing
        start = time.perf_counter()
        publish(app, n)
        print(json.dumps(n / (time.perf_counter() - start)))
    elif command == "latency":
        app.send_task(TASK, queue=QUEUE, ignore_result=False).get(timeout=60)  # warm: connections made
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            app.send_task(TASK, queue=QUEUE, ignore_result=False).get(timeout=60)
            samples.append(time.perf_counter() - start)
        print(json.dumps(samples))
    else:
        raise SystemExit(f"unknown client command {command!r}")


@contextmanager
def broker(kind: str, redis_url: str) -> Iterator[str]:
    from bench.priority import broker_for_case

    with broker_for_case(kind, redis_url) as url:
        yield url


def one_pass(row: Row, url: str, database_url: str, args: argparse.Namespace) -> None:
    from kombu import Connection

    from bench.brokers import queue_ready
    from bench.results import machine_cpu, tree_cpu

    env = row_env(row.key, url, database_url, args.tmp, args.redis_url)
    log = args.logs / f"throughput-{row.broker}-{row.key}.log"
    with ExitStack() as stack, Connection(url) as conn:
        procs = []
        if row.key in STACK:
            clear_runs(database_url)
        if runs_recorder(row.key):
            recorder = [sys.executable, "-m", "taskdeck.monitor", "monitor", "-A", "core", "-l", "warning"]
            recorder_log = args.logs / f"recorder-{row.broker}.log"
            procs.append(stack.enter_context(running(recorder, env, recorder_log)))
            # Running before the first task is sent, as in production: the lag is the steady
            # state's, not the recorder's start (its imports and reconcile take seconds here).
            ready = partial(recorder_ready, database_url, procs[0].pid)
            wait_until(ready, 120, "the recorder to start", procs, recorder_log)
        row.enqueue.append(client(row.key, env, "enqueue", args.tasks))
        ready = queue_ready(conn, QUEUE)
        if ready != args.tasks:
            raise SystemExit(f"{row.key}: published {args.tasks}, found {ready} in the queue")
        extra = ["-I", "bench.noop"] if row.key in STACK else []
        argv = worker_argv(APPS[row.key], [QUEUE], 2, f"bench-{row.key}", *extra)
        if row.key not in STACK:
            argv[3:3] = ["--result-backend", result_backend(url)]  # celery -A APP --result-backend URL worker
        procs.append(stack.enter_context(running(argv, env, log)))
        wait_until(lambda: queue_ready(conn, QUEUE) < args.tasks, 120, f"{row.key} to start", procs, log)
        start, cpu, worker_cpu = time.monotonic(), machine_cpu(), tree_cpu(procs[-1].pid)
        wait_until(lambda: queue_ready(conn, QUEUE) == 0, 600, f"{row.key} to drain", procs, log)
        elapsed = time.monotonic() - start
        row.cpu.append((tree_cpu(procs[-1].pid) - worker_cpu) * 1000 / args.tasks)
        busy, total = (b - a for a, b in zip(cpu, machine_cpu(), strict=True))
        row.drain.append(args.tasks / elapsed)
        row.busy.append(busy / total if total else 0.0)
        if runs_recorder(row.key):
            row.lags += recorder_lags(database_url, args.tasks, procs[0])
        row.latencies += client(row.key, env, "latency", args.latency)


def recorder_ready(database_url: str, pid: int) -> bool:
    """Whether the recorder ``pid`` has started and beaten its first heartbeat (asked 10 times a second)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        sql = "SELECT 1 FROM taskdeck_recorderstate WHERE pid = %s AND heartbeat_at IS NOT NULL"
        if db.execute(sql, [pid]).fetchone():
            return True
    time.sleep(0.1)
    return False


def clear_runs(database_url: str) -> None:
    """No run or result row of an earlier pass (the lag is measured on this pass's rows)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("DELETE FROM taskdeck_taskrun")
        db.execute("DELETE FROM django_celery_results_taskresult")


def recorder_lags(database_url: str, n: int, recorder: Any, timeout: float = 120) -> list[float]:
    """Once the recorder has all ``n`` runs finished: each run's end to its row's last write, seconds."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as db:
        while True:
            done = db.execute("SELECT count(*) FROM taskdeck_taskrun WHERE state = 'SUCCESS'").fetchone()
            if done and done[0] >= n:
                break
            if time.monotonic() > deadline or recorder.poll() is not None:
                raise SystemExit(f"the recorder wrote {done[0] if done else 0} of {n} runs in {timeout:.0f}s")
            time.sleep(0.1)
        rows = db.execute(
            "SELECT extract(epoch FROM updated_at - finished_at) FROM taskdeck_taskrun "
            "WHERE state = 'SUCCESS' AND NOT reconstructed"
        ).fetchall()
    return [float(lag) for (lag,) in rows]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench import references
    from bench.brokers import redis_db
    from bench.results import databases

    brokers = [b for b in args.brokers.split(",") if b]
    keys = [k for k in ROWS if k in args.rows.split(",")] if args.rows else list(ROWS)
    rows = [Row(key, ROWS[key], b) for b in brokers for key in ["bare", *keys] if (b, key) not in SKIP]
    rows = list({(r.broker, r.key): r for r in rows}.values())  # bare once, first
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.monotonic()
    with redis_db() as redis_url, databases() as urls:
        args.redis_url = redis_url
        for round_ in range(1, args.rounds + 1):
            for row in rows:
                run_pass = references.one_pass if row.key in REFERENCES else one_pass
                with broker(row.broker, redis_url) as url:
                    run_pass(row, url, urls["postgresql"], args)
                done = len(row.drain) == round_
                print(
                    f"round {round_}: {row.broker} {row.key}: "
                    + (f"enqueue {row.enqueue[-1]:.0f}/s, drain {row.drain[-1]:.0f}/s" if done else "failed"),
                    file=sys.stderr,
                    flush=True,
                )
    return {
        "rows": [asdict(r) for r in rows],
        "settings": {"tasks": args.tasks, "rounds": args.rounds, "latency": args.latency},
        "load": {"before": load_before, "after": " ".join(Path("/proc/loadavg").read_text().split()[:3])},
        "elapsed": time.monotonic() - started,
    }


def report(data: dict[str, Any]) -> list[str]:
    from bench.results import percentile

    s = data["settings"]
    lines = [
        f"{s['tasks']} noop tasks per pass, {s['rounds']} round(s), median (min-max); "
        f"worker -P prefork -c 2; round trip: {s['latency']} sequential send + get() per round.",
        "",
        "| broker | configuration | enqueue tasks/s | ratio | drain tasks/s | ratio | worker CPU/task "
        "| machine busy | round trip p50 | p99 | recorder lag p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        bare = next(r for r in data["rows"] if r["broker"] == row["broker"] and r["key"] == "bare")
        cells = [row["broker"], row["label"]]
        if not row["drain"] or not row["enqueue"]:
            reason = "; ".join(dict.fromkeys(row.get("errors") or ["no pass ran"]))
            lines.append("| " + " | ".join([*cells, f"failed: {reason}", *[""] * 8]) + " |")
            continue
        for metric in ("enqueue", "drain"):
            values = row[metric]
            median = statistics.median(values)
            cells.append(f"{median:.0f} ({min(values):.0f}-{max(values):.0f})")
            cells.append(f"{median / statistics.median(bare[metric]):.2f}")
        cells.append(f"{statistics.median(row['cpu']):.2f} ms")
        cells.append(f"{statistics.median(row['busy']):.0%}")
        for q in (0.5, 0.99):
            cells.append(f"{percentile(row['latencies'], q) * 1000:.1f} ms" if row["latencies"] else "-")
        cells.append(f"{percentile(row['lags'], 0.99) * 1000:.0f} ms" if row.get("lags") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [
        f"- {row['label']}: {len(row['errors'])} pass(es) failed: {'; '.join(dict.fromkeys(row['errors']))}"
        for row in data["rows"]
        if row.get("errors") and row["drain"]
    ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 500 tasks, 1 round, 20 round trips"
    )
    parser.add_argument("--tasks", type=int, default=2000, help="noop tasks per pass (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--latency", type=int, default=100, help="round trips per row and round (default 100)"
    )
    parser.add_argument(
        "--brokers", default="redis,rabbitmq", help="comma-separated (default redis,rabbitmq)"
    )
    parser.add_argument(
        "--rows", default="", help=f"comma-separated, bare always included (default: all of {','.join(ROWS)})"
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".taskdeck" / "bench" / "throughput.json")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "throughput.png")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        client_main(argv[1], argv[2], int(argv[3]))
        return None
    parser = argparse.ArgumentParser(
        prog="python -m bench throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.rounds, args.latency = 500, 1, 20
    from bench.chart import throughput_chart
    from bench.report import run_and_finish

    return run_and_finish(args, "throughput", run, report, throughput_chart)


if __name__ == "__main__":
    main()
