"""Where a worker's CPU goes per task: by process, and by function (cProfile in every worker process).

Run (needs what ``python -m bench throughput`` needs; not part of ``make test``)::

    .venv/bin/python -m bench profile                          # bare and taskdeck, Redis and RabbitMQ
    .venv/bin/python -m bench profile --brokers rabbitmq --rounds 3 --no-profile \\
        --variant 'prefetch4:CELERY_WORKER_PREFETCH_MULTIPLIER=4' --variant 'up:worker=up'

Each row of bench/throughput.py (``--rows``) drains ``--tasks`` queued noop
tasks on a worker ``-P prefork -c 2`` (the taskdeck rows with their recorder
running, as in the throughput bench). Two kinds of pass:

- **unprofiled** (``--rounds`` of them, interleaved): the CPU each role used
  during the drain, from /proc, per task: the worker's main process, its
  pool processes, the recorder, and the PostgreSQL backends serving the
  bench's database. CPU time, unlike a rate, does not count the time a
  process waits for a core the machine's other work holds; it still grows
  on a loaded machine, so compare the columns of one run only. Each ``--variant`` (a changed setting, or the
  worker's flags as ``taskdeck up`` gives them) is a column of its own.
- **profiled** (one per row, skipped with ``--no-profile``): cProfile on the
  thread's CPU clock in the main process (from ``worker_ready``) and in each
  pool process (from its start) to the warm shutdown after the drain
  (bench/profile_hooks.py), and in the recorder's main thread from its start
  to its stop (bench/profile_recorder.py; the taskdeck rows). Printed per role: busy CPU per task, the share
  under each named part (Celery's and taskdeck's hooks), and the functions
  with the most CPU of their own, with calls per task. cProfile makes
  Python code slower by about two, so read shares and calls, and take
  milliseconds from the unprofiled passes.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.client import QUEUE
from bench.workers import ROOT, running, stop, wait_until

#: Functions in which a process waits rather than works (their own time is not busy time).
IDLE = ("poll", "select", "epoll", "sleep", "wait", "acquire")

#: Named parts: (label, file fragment, function) whose inclusive time is shown per role.
PARTS = [
    ("run the task (trace: task, results, signals)", "celery/app/trace.py", "trace_task"),
    ("  store the result (backend.store_result)", "", "store_result"),
    ("  mark STARTED", "celery/backends/base.py", "mark_as_started"),
    ("  send a task event from the pool", "celery/worker/request.py", "send_event"),
    ("receive a message (strategy: Request, events)", "celery/worker/strategy.py", "task_message_handler"),
    ("  taskdeck guard", "taskdeck/guard.py", "on_message"),
    ("  task-received event", "celery/events/dispatcher.py", "send"),
    ("publish events (dispatcher flush)", "celery/events/dispatcher.py", "flush"),
    ("  kombu publish", "kombu/messaging.py", "_publish"),
    ("acknowledge (ack / basic_ack)", "kombu/message.py", "ack"),
    ("pool: send job to a child (apply_async)", "celery/concurrency/base.py", "apply_async"),
    ("pool: read results from children", "billiard/pool.py", "on_result_readable"),
    ("on_success / on_ready in the main process", "celery/worker/request.py", "on_success"),
    ("Redis transport: poll cycle", "kombu/transport/redis.py", "on_readable"),
    ("AMQP: drain events", "amqp/connection.py", "drain_events"),
    ("timer / hub tick", "kombu/asynchronous/hub.py", "fire_timers"),
]
#: The recorder's named parts (its main thread: the loop over the records' stream and the events).
RECORDER_PARTS = [
    ("read records (XREADGROUP, decode)", "taskdeck/monitor/records.py", "read"),
    (
        "write a batch: records and the events waiting (one transaction)",
        "taskdeck/monitor/recorder.py",
        "write_batch",
    ),
    ("  facts of the records", "taskdeck/monitor/records.py", "facts"),
    ("  result rows (fold, upsert)", "taskdeck/monitor/records.py", "write_results"),
    ("  runs (read, merge, upsert)", "taskdeck/monitor/runs.py", "apply"),
    ("  rollups", "taskdeck/monitor/rollups.py", "on_changes"),
    ("acknowledge records (XACK, XDEL)", "taskdeck/monitor/records.py", "ack"),
    ("  task events' facts (task-sent)", "taskdeck/monitor/merge.py", "fact_from_event"),
    ("task events alone (check, write)", "taskdeck/monitor/recorder.py", "process"),
    ("tick (subscribers, heartbeat, claims)", "taskdeck/monitor/recorder.py", "tick"),
]


#: The worker's flags after ``-n``: the bench's (quiet, no cluster chatter), or as ``taskdeck up`` runs it.
QUIET = ["-l", "warning", "--without-mingle", "--without-gossip", "--without-heartbeat"]
UP = ["-l", "INFO"]


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME:KEY=VALUE;...`` -> (NAME, {KEY: JSON value, or text}); KEY ``worker``: ``quiet`` or ``up``."""
    name, _, body = spec.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, body.split(";")):
        key, _, raw = item.partition("=")
        try:
            settings[key.strip()] = json.loads(raw)
        except ValueError:
            settings[key.strip()] = raw
    return name, settings


def drain(
    key: str,
    broker_kind: str,
    url: str,
    database_url: str,
    args: argparse.Namespace,
    profiled: bool,
    variant: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Drain ``args.tasks`` queued noop tasks on the row's worker; CPU seconds per process role.

    Roles: the worker's main process, its pool processes, the recorder (taskdeck
    rows) and the PostgreSQL backends serving the bench database (whoever
    opened them). With ``profiled``, cProfile runs in the worker
    (bench/profile_hooks.py) and writes to ``args.tmp/<broker>-<row>``.
    """
    from kombu import Connection

    from bench.brokers import queue_ready
    from bench.throughput import APPS, client, result_backend, row_env, runs_recorder

    env = row_env(key, url, database_url, args.tmp, args.redis_url)  # the record row's stream on RabbitMQ
    variant = dict(variant or {})
    flags = UP if variant.pop("worker", "quiet") == "up" else QUIET
    extra_includes = [m for m in str(variant.pop("include", "")).split(",") if m]
    for name in [n for n in variant if n.startswith("env.")]:
        env[name[4:]] = str(variant.pop(name))
    if variant and key.startswith("taskdeck"):
        env["DJANGO_SETTINGS_MODULE"] = "bench.profile_settings"
        env["BENCH_SETTINGS"] = json.dumps(variant)
    includes = (["bench.noop"] if key.startswith("taskdeck") else []) + extra_includes
    if profiled:
        out = args.tmp / f"{broker_kind}-{key}"
        out.mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE_DIR"] = str(out)
        includes.append("bench.profile_hooks")
    log = args.logs / f"profile-{broker_kind}-{key}.log"
    db = database_url.rsplit("/", 1)[1]
    with ExitStack() as stack, Connection(url) as conn:
        procs, recorder = [], None
        if runs_recorder(key):
            argv = [sys.executable, "-m", "taskdeck.monitor", "monitor", "-A", "core", "-l", "warning"]
            if profiled:
                argv[2:4] = ["bench.profile_recorder"]
            recorder = stack.enter_context(running(argv, env, args.logs / f"recorder-{broker_kind}.log"))
            procs.append(recorder)
        client(key, env, "enqueue", args.tasks)
        argv = [sys.executable, "-m", "celery", "-A", APPS[key], "worker", "-Q", QUEUE, "-P", "prefork"]
        argv += ["-c", "2", "-n", f"profile-{key}@%h", *flags, *(["-I", ",".join(includes)] * bool(includes))]
        if not key.startswith("taskdeck"):
            argv[3:3] = ["--result-backend", result_backend(url)]
        worker = stack.enter_context(running(argv, env, log))
        procs.append(worker)
        wait_until(lambda: queue_ready(conn, QUEUE) < args.tasks, 180, f"{key} to start", procs, log)
        start, before = time.monotonic(), cpu_by_role(worker.pid, recorder, db)
        wait_until(lambda: queue_ready(conn, QUEUE) == 0, 900, f"{key} to drain", procs, log)
        elapsed = time.monotonic() - start
        time.sleep(0.5)  # the last prefetched tasks finish, the recorder writes their events
        after = cpu_by_role(worker.pid, recorder, db)
        print(
            f"{broker_kind} {key}: drained {args.tasks} in {elapsed:.1f} s"
            + (" (profiled)" if profiled else f", {args.tasks / elapsed:.0f}/s"),
            file=sys.stderr,
            flush=True,
        )
        stop(worker, timeout=60)
        if recorder is not None:
            stop(recorder, timeout=60)  # a profiled recorder writes its profile as it stops
    used = {role: after[role] - before.get(role, 0.0) for role in after}
    used["drain seconds"] = elapsed
    return used


def _cpu(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(worker: int, recorder: Any, db: str) -> dict[str, float]:
    """CPU seconds used so far by each role's processes (PostgreSQL: the backends on ``db`` now)."""
    import psycopg

    from bench.results import POSTGRES, tree_cpu
    from bench.workers import children

    pool = children(worker)
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        backends = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [db])]
    roles = {
        "worker main process": _cpu(worker),
        "worker pool processes": sum(_cpu(pid) for pid in pool),
        "PostgreSQL backends": sum(_cpu(pid) for pid in backends),
    }
    if recorder is not None:
        roles["recorder"] = tree_cpu(recorder.pid)
    return roles


def cpu_table(cpu: dict[tuple[str, str, str], list[dict[str, float]]], tasks: int) -> list[str]:
    """CPU milliseconds per task by role (median of the rounds), one column per (broker, row, variant)."""
    import statistics

    def median(passes: list[dict[str, float]], role: str) -> float:
        return statistics.median(p.get(role, 0.0) for p in passes)

    roles = list(
        dict.fromkeys(r for passes in cpu.values() for p in passes for r in p if r != "drain seconds")
    )
    heads = [f"{b}: {k}" + (f" `{v}`" if v else "") for b, k, v in cpu]
    lines = ["| CPU ms per task | " + " | ".join(heads) + " |", "|---|" + "---|" * len(cpu)]
    for role in roles:
        cells = [
            f"{median(p, role) * 1000 / tasks:.2f}" if any(role in x for x in p) else "-"
            for p in cpu.values()
        ]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    totals = [
        statistics.median(sum(v for r, v in x.items() if r != "drain seconds") for x in p) * 1000 / tasks
        for p in cpu.values()
    ]
    lines.append("| **all of them** | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")
    rates = [tasks / median(p, "drain seconds") for p in cpu.values()]
    lines.append("| drain tasks/s | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
    return lines


def _is_idle(func: tuple[str, int, str]) -> bool:
    filename, _, name = func
    return filename == "~" and any(word in name for word in IDLE)


def summarize(folder: Path, tasks: int, top: int) -> list[str]:
    lines: list[str] = []
    for role in ("main", "child", "recorder"):
        files = sorted(folder.glob(f"{role}-*.prof"))
        if not files:
            if role == "recorder":
                continue
            lines.append(f"({role}: no profile written)")
            continue
        stats = pstats.Stats(*(str(f) for f in files))
        entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        total = sum(tt for (_, _, tt, _, _) in entries.values())
        idle = sum(tt for func, (_, _, tt, _, _) in entries.items() if _is_idle(func))
        busy = total - idle
        name = {"main": "main process", "recorder": "recorder (main thread)"}.get(
            role, f"pool processes ({len(files)})"
        )
        lines += [
            f"**{name}**: busy {busy * 1000 / tasks:.3f} ms per task "
            f"(profiled {total:.1f} s, of which waiting {idle:.1f} s)",
            "",
            "| part | ms per task | share of busy |",
            "|---|---|---|",
        ]
        for label, fragment, func_name in RECORDER_PARTS if role == "recorder" else PARTS:
            cum = sum(
                ct
                for (filename, _, fname), (_, _, _, ct, _) in entries.items()
                if fname == func_name and fragment in filename
            )
            if cum:
                lines.append(f"| {label} | {cum * 1000 / tasks:.3f} | {cum / busy:.0%} |")
        lines += [
            "",
            "| function (own time) | calls per task | µs per task | share of busy |",
            "|---|---|---|---|",
        ]
        ranked = sorted(
            ((func, v) for func, v in entries.items() if not _is_idle(func)), key=lambda fv: -fv[1][2]
        )
        for (filename, line, fname), (_, ncalls, tt, _, _) in ranked[:top]:
            where = fname if filename == "~" else f"{_short(filename)}:{line} {fname}"
            lines.append(f"| `{where}` | {ncalls / tasks:.2f} | {tt * 1e6 / tasks:.1f} | {tt / busy:.1%} |")
        lines.append("")
    return lines


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m bench profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=2000, help="noop tasks drained per row (default 2000)")
    parser.add_argument(
        "--rows", default="bare,taskdeck", help="rows of bench/throughput.py (default bare,taskdeck)"
    )
    parser.add_argument(
        "--brokers", default="redis,rabbitmq", help="comma-separated (default redis,rabbitmq)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="unprofiled passes per column (default 1)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="a variant, NAME:KEY=VALUE;...: a setting (dotted into dicts; taskdeck rows only), env.NAME, "
        "include=MODULE (also loaded by the worker), or worker=up (its flags as `taskdeck up` gives "
        "them: -l INFO, gossip, mingle, heartbeat)",
    )
    parser.add_argument("--no-profile", action="store_true", help="the CPU split alone (no profiled pass)")
    parser.add_argument("--top", type=int, default=20, help="functions listed per process role (default 20)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-profile-"))
    args.logs = args.tmp / "logs"

    from bench.brokers import redis_db
    from bench.references import REFERENCES
    from bench.results import databases
    from bench.throughput import ROWS, broker

    keys = [k for k in args.rows.split(",") if k]
    for key in keys:
        if key not in ROWS or key in REFERENCES:
            raise SystemExit(f"--rows: {key!r} is not a Celery row of bench/throughput.py")
    variants = [("", {}), *(parse_variant(v) for v in args.variant)]
    columns = [
        (b, k, name, settings)
        for b in args.brokers.split(",")
        if b
        for k in keys
        for name, settings in variants
        if k.startswith("taskdeck") or not name or not set(settings) - {"include", "worker"}
    ]
    cpu: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    profiles: list[str] = []
    with redis_db() as redis_url, databases() as urls:
        args.redis_url = redis_url
        for _ in range(args.rounds):
            for b, k, name, settings in columns:
                with broker(b, redis_url) as url:
                    used = drain(k, b, url, urls["postgresql"], args, False, settings)
                cpu.setdefault((b, k, name), []).append(used)
        if not args.no_profile:
            for b, k, name, _settings in columns:
                if name:
                    continue
                with broker(b, redis_url) as url:
                    drain(k, b, url, urls["postgresql"], args, True)
                profiles += [f"\n### {b}: {ROWS[k]} (cProfile, CPU clock)\n"]
                profiles += summarize(args.tmp / f"{b}-{k}", args.tasks, args.top)
    print(
        f"{args.tasks} noop tasks drained per pass, worker -P prefork -c 2, {args.rounds} round(s), "
        "median; CPU from /proc in unprofiled passes:\n"
    )
    for _, _, name, settings in columns:
        if name:
            print(f"- `{name}`: {json.dumps(settings)}")
    print("\n".join(["", *cpu_table(cpu, args.tasks), *profiles]), flush=True)
    print(f"\nprofiles kept in {args.tmp} (open with python -m pstats)")


if __name__ == "__main__":
    main()
