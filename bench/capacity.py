"""How many task runs one recorder absorbs from the record stream, and two recorders on one stream.

Run (needs Redis and PostgreSQL; not part of `make test`):

    .venv/bin/python -m bench capacity --hosts 4 --fill 20000 --seconds 20

Records are written exactly as worker processes write them with
``taskdeck.results.record:RecordBackend``: each simulated worker host is a
producer process calling the backend's own ``store_result`` (STARTED held,
then the final state; some runs retried once or twice, some failed), with a
hostname and task ids of its own, so the stream entries are the backend's
encoding, written by its one-round-trip script. A real recorder
(``python -m taskdeck.monitor monitor``) reads them into a fresh PostgreSQL
database (migrated, dropped at the end), in a Redis database of its own.

1. Saturation: the stream filled with ``--fill`` runs while no recorder runs,
   then one recorder started: runs/s from its first acknowledged batch to
   an empty stream, with the CPU of the recorder, of its PostgreSQL
   backends and of Redis, and the recorder's RSS.
2. Offered load: the recorder running, the producers send at fractions of
   that capacity for ``--seconds`` each; every second, the entries in the
   stream (not yet written, or read and not acknowledged) and the age of the
   oldest. Below capacity the backlog stays flat; above it, it grows by
   about the difference.
3. Two recorders (``--name cap-a`` and ``--name cap-b``, one consumer group):
   the same fill drained by both at once, the same figures per process, and
   how often a PostgreSQL backend of a recorder was waiting for the run
   writers' advisory lock (``taskdeck.monitor.runs.lock_writers``), sampled
   from ``pg_stat_activity``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORD = "taskdeck.results.record:RecordBackend"
TASKS = ("capacity.resize", "capacity.mail", "capacity.report", "capacity.sync")
QUEUES = ("default", "io", "reports")
TICK = os.sysconf("SC_CLK_TCK")


# --- the records: what one simulated worker host stores ----------------------


def plan(i: int) -> list[str]:
    """The states run ``i`` stores, in order (STARTED is held by the backend: no record of it)."""
    if i % 25 == 7:
        return ["RETRY", "RETRY", "FAILURE"]
    if i % 10 == 3:
        return ["RETRY", "SUCCESS"]
    if i % 20 == 11:
        return ["FAILURE"]
    return ["SUCCESS"]


def task_id(host: str, i: int) -> str:
    return f"{host.split('@')[0]}-{i:08d}-{uuid.uuid5(uuid.NAMESPACE_OID, f'{host}/{i}').hex[:12]}"


def expected(host: str, i: int) -> dict[str, Any]:
    """The run that run ``i`` of ``host`` must become: its id, name, queue, final state, retries."""
    states = plan(i)
    return {
        "task_id": task_id(host, i),
        "name": TASKS[i % len(TASKS)],
        "queue": QUEUES[i % len(QUEUES)],
        "state": states[-1],
        "retries": len(states) - 1,
        "records": len(states),
        "worker": host,
    }


def store_run(backend: Any, host: str, i: int) -> int:
    """Store every state of run ``i`` as a worker process of ``host`` does; returns the records written."""
    from celery.app.task import Context

    run = expected(host, i)
    written = 0
    for attempt, state in enumerate(plan(i)):
        request = Context(
            id=run["task_id"],
            task=run["name"],
            args=[i, attempt],
            kwargs={"size": "small"},
            hostname=host,
            retries=attempt,
            delivery_info={"exchange": "", "routing_key": run["queue"], "priority": i % 3},
            root_id=run["task_id"],
            taskdeck_sent=time.time() - 0.002,
        )
        backend.store_result(run["task_id"], None, "STARTED", request=request)
        result: Any = {"id": i, "ok": True}
        tb = None
        if state != "SUCCESS":
            result, tb = ValueError(f"run {i} attempt {attempt}"), "Traceback (most recent call last):\n..."
        backend.store_result(run["task_id"], result, state, traceback=tb, request=request)
        written += 1
    return written


def produce(host: str, first: int, runs: int, rate: float, start_at: float) -> None:
    """A producer process: ``runs`` runs at ``rate`` runs/s (0: as fast as it can), from ``start_at``."""
    import django

    django.setup()
    from celery import current_app

    from taskdeck.results.record import RecordBackend

    backend = current_app.backend
    assert isinstance(backend, RecordBackend), f"CELERY_BACKEND is not {RECORD}"
    backend.redis().ping()
    time.sleep(max(0.0, start_at - time.time()))
    began = time.monotonic()
    records = 0
    for n in range(runs):
        if rate > 0:
            ahead = began + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        records += store_run(backend, host, first + n)
    elapsed = time.monotonic() - began
    print(json.dumps({"host": host, "runs": runs, "records": records, "seconds": elapsed}), flush=True)


# --- the processes ---------------------------------------------------------------


def env(broker: str, database: str) -> dict[str, str]:
    from bench.workers import child_env

    return child_env(
        DJANGO_SETTINGS_MODULE="core.settings",
        DATABASE_URL=database,
        CELERY_BROKER=broker,
        CELERY_BACKEND=RECORD,
        TASKDECK_EVENTS="0",
    )


def host_name(k: int) -> str:
    return f"w{k}@capacity-host-{k:03d}"


def producers(
    environ: dict[str, str], hosts: int, runs_each: int, rate: float, first: int, log: Path
) -> list[dict[str, Any]]:
    """Run ``hosts`` producer processes at ``rate`` runs/s in all; their reports when they are done."""
    start_at = time.time() + 3  # all start together, after Django is set up
    procs = []
    with log.open("ab") as err:
        for k in range(hosts):
            argv = [sys.executable, "-m", "bench.capacity", "produce", host_name(k), str(first)]
            argv += [str(runs_each), str(rate / hosts), str(start_at)]
            procs.append(subprocess.Popen(argv, env=environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=err))
        out = []
        for proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"a producer exited with {proc.returncode}; see {log}")
            out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


@contextmanager
def recorder(environ: dict[str, str], name: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    from bench.workers import running

    argv = [
        sys.executable,
        "-m",
        "taskdeck.monitor",
        "monitor",
        "-A",
        "core",
        "--name",
        name,
        "-l",
        "warning",
    ]
    with running(argv, environ, log) as proc:
        yield proc


@contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated; dropped at the end."""
    import psycopg

    from bench.results import POSTGRES, base_env

    name = f"taskdeck_bench_capacity_{uuid.uuid4().hex[:6]}"
    url = f"{POSTGRES}/{name}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate = {**base_env(), "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "core.settings"}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            env=migrate,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- what is measured ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / TICK


def redis_pid(client: Any) -> int:
    return int(client.info("server")["process_id"])


class Stream:
    """The record stream's backlog: entries in it, entries read and not acknowledged, the oldest's age."""

    def __init__(self, client: Any) -> None:
        from taskdeck.results.record import stream_key

        self.client = client
        self.key = stream_key()

    def length(self) -> int:
        return int(self.client.xlen(self.key))

    def pending(self) -> int:
        from taskdeck.monitor.records import GROUP

        try:
            return int(self.client.xpending(self.key, GROUP)["pending"])
        except Exception:  # noqa: BLE001 - no group before a recorder ran
            return 0

    def oldest_age(self) -> float:
        first = self.client.xrange(self.key, count=1)
        if not first:
            return 0.0
        return max(0.0, time.time() - int(first[0][0].split(b"-")[0]) / 1000)


class Sampler:
    """Every ``every`` seconds on a thread: the backlog, and whether recorders wait on the writers' lock."""

    def __init__(self, stream: Stream, database: str, every: float = 1.0) -> None:
        self.stream, self.database, self.every = stream, database, every
        self.rows: list[dict[str, float]] = []
        self.lock_samples = 0
        self.lock_waits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.began = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            next_row = time.monotonic()
            while not self._stop.is_set():
                # Many lock samples (every 50 ms), a backlog row every ``every`` s.
                waits = conn.execute(
                    "SELECT count(*) FILTER (WHERE wait_event = 'advisory'), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'"
                ).fetchone()
                assert waits is not None
                self.lock_waits += waits[0]
                self.lock_samples += 1
                now = time.monotonic()
                if now >= next_row:
                    self.rows.append(
                        {
                            "t": now - self.began,
                            "in_stream": self.stream.length(),
                            "read_not_acked": self.stream.pending(),
                            "oldest_s": self.stream.oldest_age(),
                        }
                    )
                    next_row += self.every
                self._stop.wait(0.05)


class Usage:
    """CPU seconds of processes between two points, and the machine's busy share."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        from bench.results import machine_cpu

        self.pids = pids
        self.start = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        self.machine = machine_cpu()
        self.t0 = time.monotonic()

    def done(self) -> dict[str, float]:
        from bench.results import machine_cpu

        wall = time.monotonic() - self.t0
        busy, total = machine_cpu()
        out = {k: (sum(cpu_seconds(p) for p in v) - self.start[k]) / wall for k, v in self.pids.items()}
        out["the machine, every process"] = (
            (busy - self.machine[0]) / max(1, total - self.machine[1]) * (os.cpu_count() or 1)
        )
        out["wall"] = wall
        return out


def backends_of(database: str) -> dict[str, list[int]]:
    """The PostgreSQL backends connected to the bench's database (the recorders', the bench's own)."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {"PostgreSQL backends": [r[0] for r in rows]}


def table_bytes(database: str) -> int:
    """Bytes of the run and result tables, indexes included (rollups grow by minute, not by run)."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('taskdeck_taskrun') "
            "+ pg_total_relation_size('django_celery_results_taskresult')"
        ).fetchone()
    return int(row[0]) if row else 0


def empty_tables() -> None:
    from django.db import connection

    from taskdeck.models import EVERY_ROLLUP, RecorderState, TaskRun, TaskTotal

    models: list[Any] = [TaskRun, *EVERY_ROLLUP, TaskTotal, RecorderState]
    tables = [m._meta.db_table for m in models]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)}, django_celery_results_taskresult")


def drain(
    environ: dict[str, str],
    stream: Stream,
    database: str,
    names: list[str],
    runs: int,
    records: int,
    redis_pid_: int,
    log: Path,
) -> dict[str, Any]:
    """Start ``names`` recorders on a full stream; runs/s from the first acknowledgement to empty."""
    from taskdeck.models import TaskRun

    with ExitStack() as stack:
        procs = [stack.enter_context(recorder(environ, name, log)) for name in names]
        wait = time.monotonic() + 180
        while stream.length() >= records:
            if time.monotonic() > wait or any(p.poll() is not None for p in procs):
                raise SystemExit(f"no recorder started reading; see {log}")
            time.sleep(0.01)
        pids = {f"recorder {n}": [p.pid] for n, p in zip(names, procs, strict=True)}
        pids.update(backends_of(database))
        pids["redis-server"] = [redis_pid_]
        usage = Usage(pids)
        rss: dict[str, int] = {}
        with Sampler(stream, database, every=0.25) as sampler:
            left = stream.length()
            while stream.length() > 0:
                if time.monotonic() > wait + 1800 or any(p.poll() is not None for p in procs):
                    raise SystemExit(f"recorders stopped or too slow; see {log}")
                from bench.workers import rss_kib

                for n, p in zip(names, procs, strict=True):
                    rss[n] = max(rss.get(n, 0), rss_kib(p.pid) or 0)
                time.sleep(0.05)
        used = usage.done()
        while TaskRun.objects.count() < runs:
            time.sleep(0.1)
    # The rate between 90 % and 10 % of the fill left: both recorders past their start, none idle yet.
    series = [(r["t"], r["in_stream"]) for r in sampler.rows]
    top = next((s for s in series if s[1] <= 0.9 * records), series[0])
    bottom = next((s for s in series if s[1] <= 0.1 * records), series[-1])
    if bottom[0] <= top[0]:  # a fill too small to sample in between: the whole drain
        top, bottom = (0.0, left), (used["wall"], 0)
    seconds = max(0.001, bottom[0] - top[0])
    per_record = runs / records
    return {
        "recorders": names,
        "records": top[1] - bottom[1],
        "seconds": seconds,
        "runs_per_s": (top[1] - bottom[1]) * per_record / seconds,
        "records_per_s": (top[1] - bottom[1]) / seconds,
        "drain_wall": used["wall"],
        "first_ack_records": left,
        "cpu": {k: v for k, v in used.items() if k != "wall"},
        "rss_mib": {n: v / 1024 for n, v in rss.items()},
        "lock_wait_share": sampler.lock_waits / max(1, sampler.lock_samples),
        "peak_backlog": max((r["in_stream"] for r in sampler.rows), default=0),
    }


def fill(environ: dict[str, str], hosts: int, runs: int, first: int, log: Path) -> tuple[int, float]:
    """Fill the stream with ``runs`` runs from ``hosts`` producers as fast as they go: (records, runs/s)."""
    each = runs // hosts
    reports = producers(environ, hosts, each, 0, first, log)
    records = sum(r["records"] for r in reports)
    return records, each * hosts / max(r["seconds"] for r in reports)


def offered(
    environ: dict[str, str],
    stream: Stream,
    database: str,
    hosts: int,
    rate: float,
    seconds: float,
    first: int,
    log: Path,
    recorder_pid: int,
) -> dict[str, Any]:
    """Producers at ``rate`` runs/s for ``seconds`` into a running recorder: the backlog over time."""
    each = max(1, int(rate * seconds / hosts))
    usage = Usage({"recorder": [recorder_pid]})
    with Sampler(stream, database) as sampler:
        reports = producers(environ, hosts, each, rate, first, log)
        stopped = time.monotonic() - sampler.began
        used = usage.done()
        deadline = time.monotonic() + 600
        while stream.length() > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = time.monotonic() - sampler.began - stopped
    sent = sum(r["runs"] for r in reports)
    achieved = sent / max(r["seconds"] for r in reports)
    during = [r for r in sampler.rows if 3 <= r["t"] <= stopped]
    growth = 0.0
    if len(during) >= 4:
        half = during[len(during) // 2 :]
        growth = (half[-1]["in_stream"] - half[0]["in_stream"]) / max(0.001, half[-1]["t"] - half[0]["t"])
    return {
        "rate": rate,
        "achieved": achieved,
        "records": sum(r["records"] for r in reports),
        "backlog_max": max((r["in_stream"] for r in during), default=0),
        "backlog_end": during[-1]["in_stream"] if during else 0,
        "growth_per_s": growth,
        "oldest_max_s": max((r["oldest_s"] for r in during), default=0.0),
        "drain_after_s": drained,
        "recorder_cores": used["recorder"],
        "machine_cores": used["the machine, every process"],
        "series": sampler.rows,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    from bench.results import redis_db

    log = Path(f"/tmp/taskdeck-bench-capacity-{os.getpid()}.log")
    data: dict[str, Any] = {"load": {"before": os.getloadavg()}, "args": vars(args) | {"log": str(log)}}
    began = time.monotonic()
    with redis_db() as broker, database() as url:
        environ = env(broker, url)
        os.environ.update(
            DATABASE_URL=url,
            CELERY_BROKER=broker,
            CELERY_BACKEND=RECORD,
            DJANGO_SETTINGS_MODULE="core.settings",
        )
        import django

        django.setup()
        client = redis.Redis.from_url(broker)
        stream, rpid = Stream(client), redis_pid(client)
        first = 0

        # 1. one recorder, a full stream
        before = int(client.info("memory")["used_memory"])
        records, fill_rate = fill(environ, args.hosts, args.fill, first, log)
        first += args.fill
        data["fill"] = {
            "runs": args.fill,
            "records": records,
            "runs_per_s": fill_rate,
            "stream_bytes_per_record": int(client.memory_usage(stream.key, samples=0) or 0) / records,
            "redis_bytes_per_run": (int(client.info("memory")["used_memory"]) - before) / args.fill,
        }
        print(f"filled: {args.fill} runs, {records} records, {fill_rate:.0f} runs/s", file=sys.stderr)
        one = drain(environ, stream, url, ["cap-a"], args.fill, records, rpid, log)
        data["one"] = one
        data["table_bytes_per_run"] = table_bytes(url) / args.fill
        print(f"one recorder: {one['runs_per_s']:.0f} runs/s", file=sys.stderr)

        # 2. offered load, one recorder running
        capacity = one["runs_per_s"]
        data["offered"] = []
        with recorder(environ, "cap-a", log) as proc:
            time.sleep(5)
            for share in args.shares:
                rate = capacity * share
                point = offered(environ, stream, url, args.hosts, rate, args.seconds, first, log, proc.pid)
                point["share"] = share
                first += int(capacity * share * args.seconds) + args.hosts
                data["offered"].append(point)
                print(
                    f"offered {share:.0%}: {point['achieved']:.0f} runs/s, {point['backlog_max']} waiting",
                    file=sys.stderr,
                )

        # 3. two recorders, the same fill
        empty_tables()
        records, _ = fill(environ, args.hosts, args.fill, first, log)
        first += args.fill
        two = drain(environ, stream, url, ["cap-a", "cap-b"], args.fill, records, rpid, log)
        data["two"] = two
        print(f"two recorders: {two['runs_per_s']:.0f} runs/s", file=sys.stderr)

        # 1 again, after 3: the order's effect (a bigger table) seen
        empty_tables()
        records, _ = fill(environ, args.hosts, args.fill, first, log)
        data["one_again"] = drain(environ, stream, url, ["cap-a"], args.fill, records, rpid, log)
    data["load"]["after"] = os.getloadavg()
    data["elapsed"] = time.monotonic() - began
    return data


# --- the report ------------------------------------------------------------------


def report(data: dict[str, Any]) -> list[str]:
    from bench.results import machine

    one, two, again = data["one"], data["two"], data["one_again"]
    records_per_run = data["fill"]["records"] / data["fill"]["runs"]
    out = [
        f"{data['args']['hosts']} simulated worker hosts; {data['fill']['runs']:,} runs "
        f"({data['fill']['records']:,} records, {records_per_run:.2f} a run: retries and failures "
        f"among them) filled at {data['fill']['runs_per_s']:,.0f} runs/s while no recorder ran.",
        "",
        "| recorders on the stream | runs/s absorbed | records/s | ratio to one | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, d in (("one", one), ("two (one consumer group)", two), ("one, again", again)):
        ratio = d["runs_per_s"] / statistics.mean([one["runs_per_s"], again["runs_per_s"]])
        out.append(
            f"| {label} | {d['runs_per_s']:,.0f} | {d['records_per_s']:,.0f} | {ratio:.2f} "
            f"| {d['seconds']:.1f} |"
        )
    out += ["", f"CPU while draining (cores busy on average; the machine has {os.cpu_count()}):", ""]
    keys = sorted({k for d in (one, two) for k in d["cpu"]}, key=lambda k: (not k.startswith("recorder"), k))
    out += ["| process | one recorder | two recorders |", "|---|---:|---:|"]
    for key in keys:
        a = one["cpu"].get(key)
        b = two["cpu"].get(key)
        out.append(f"| {key} | {'' if a is None else f'{a:.2f}'} | {'' if b is None else f'{b:.2f}'} |")
    rss = ", ".join(f"{k} {v:.0f} MiB" for k, v in {**one["rss_mib"]}.items())
    rss2 = ", ".join(f"{k} {v:.0f} MiB" for k, v in two["rss_mib"].items())
    for label, d in (("one recorder", one), ("two recorders", two)):
        per_run = sum(v for k, v in d["cpu"].items() if k.startswith("recorder")) / d["runs_per_s"] * 1e6
        pg = d["cpu"]["PostgreSQL backends"] / d["runs_per_s"] * 1e6
        out.append(
            f"\n{label}: recorder CPU {per_run:,.0f} µs a run, its PostgreSQL backends {pg:,.0f} µs a run "
            f"(that CPU alone, on a whole core, would be about {1e6 / per_run:,.0f} runs/s)."
        )
    out += [
        "",
        f"Recorder RSS, peak while draining: one recorder: {rss}; two: {rss2}.",
        f"Recorder backends waiting for the run writers' lock (share of 50 ms samples of active ones): "
        f"one recorder {one['lock_wait_share']:.2f}, two {two['lock_wait_share']:.2f}.",
        "",
        f"Offered load into one running recorder ({data['args']['seconds']} s each; capacity taken as "
        f"{one['runs_per_s']:,.0f} runs/s):",
        "",
        "| offered (share of capacity) | sent runs/s | written runs/s | backlog growth, entries/s (2nd half) "
        "| backlog max, entries | oldest unwritten record, max s | emptied after the producers stopped, s "
        "| recorder CPU, cores | machine CPU, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in data["offered"]:
        written = p["achieved"] - p["growth_per_s"] / records_per_run
        out.append(
            f"| {p['share']:.0%} | {p['achieved']:,.0f} | {written:,.0f} | {p['growth_per_s']:+,.0f} | "
            f"{p['backlog_max']:,} | {p['oldest_max_s']:.1f} | {p['drain_after_s']:.1f} | "
            f"{p['recorder_cores']:.2f} | {p['machine_cores']:.2f} |"
        )
    fill = data["fill"]
    out += [
        "",
        f"Redis, records waiting: {fill['stream_bytes_per_record']:,.0f} bytes a stream entry "
        f"(MEMORY USAGE of the stream), {fill['redis_bytes_per_run']:,.0f} bytes of used_memory a run "
        "(the entries and the result keys, which expire after RESULTS['TTL']). PostgreSQL: "
        f"{data['table_bytes_per_run']:,.0f} bytes a run in the run and result tables with their indexes.",
    ]
    out += ["", *[f"- {line}" for line in machine()]]
    out.append(
        f"- load average (1, 5, 15 min) before: {tuple(round(x, 2) for x in data['load']['before'])}; "
        f"after: {tuple(round(x, 2) for x in data['load']['after'])}"
    )
    out.append(f"- wall time {data['elapsed']:.0f} s")
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["produce"]:
        host, first, runs, rate, start_at = argv[1:6]
        produce(host, int(first), int(runs), float(rate), float(start_at))
        return
    parser = argparse.ArgumentParser(prog="python -m bench capacity")
    parser.add_argument("--hosts", type=int, default=4, help="simulated worker hosts (producer processes)")
    parser.add_argument("--fill", type=int, default=20000, help="runs in the stream for the drain passes")
    parser.add_argument("--seconds", type=float, default=20, help="seconds of each offered-load pass")
    parser.add_argument(
        "--shares", default="0.5,0.8,1.2,1.5", help="offered loads, as shares of the measured capacity"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    args.shares = [float(x) for x in args.shares.split(",") if x]
    sys.path.insert(0, str(ROOT))
    data = run(args)
    print("\n".join(report(data)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
