"""Results in the Django database: drain rate and round-trip latency, as ratios to bare Celery.

Run (needs Redis and PostgreSQL on 127.0.0.1; not part of ``make test``)::

    .venv/bin/python -m bench.results                 # N=3000, 3 rounds
    .venv/bin/python -m bench.results --tasks 5000 --rounds 5 --variants all

In one run, on the same Redis (a database number of its own, claimed as the
tests claim theirs), with the same worker (``-P prefork -c 2``, events off):

- ``bare``: a minimal Celery app (bench/bare.py), no Django, results ignored;
- ``plain django-db``: Celery + django-celery-results as the notes set them up
  (bench/plain/), on PostgreSQL and on SQLite (WAL);
- ``taskdeck``: the reference project as shipped (core/settings.py: the
  direct upsert backend), on PostgreSQL and on SQLite (WAL);
- ``taskdeck write-behind``: the same with ``CELERY_BACKEND`` set to the
  write-behind backend (results through Redis, rows flushed in batches);
- with ``--variants``: the taskdeck stack with one part changed at a time
  (bench/variants.py), to show what each part is worth.

One command runs it all and prints the table of docs/benchmarks.md.

Drain rate: N noop tasks are enqueued first, then a fresh worker is started;
the clock runs from the first message taken off the queue to the moment the
queue and the unacknowledged set are both empty (acks are late, so a result
is stored before its message is acknowledged). Rounds are interleaved, so a
burst of load from elsewhere hits every configuration alike; the median is
printed with the spread, and the ratio to bare is taken within each round
(the median of the per-round ratios). Latency: sequential ``send_task(...).get()`` round
trips against the running worker, once, in the first round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
QUEUE = "bench"
CLAIM_KEY = "taskdeck:test:claim"  # the tests' protocol: a database number nobody else uses


@dataclass
class Config:
    """One row of the table: how the worker and the client are started."""

    key: str
    label: str
    database: str | None  # "postgresql", "sqlite" or None (results ignored)
    worker_app: str
    client_app: str
    settings: str | None = None
    include: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    flush_lag: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # machine CPU busy share during the drain
    worker_cpu: list[float] = field(default_factory=list)  # worker CPU ms per task (all its processes)
    rows_in_database: bool = True


def configs(variants: list[str]) -> list[Config]:
    from bench.variants import VARIANTS

    rows = [Config("bare", "bare Celery, results ignored", None, "bench.bare", "bench.bare:app")]
    for db in ("postgresql", "sqlite"):
        rows.append(
            Config(
                f"plain-{db}",
                "plain Celery + django-db",
                db,
                "bench.plain.celery_app",
                "bench.plain.celery_app:app",
                settings="bench.plain.settings",
            )
        )
        rows.append(
            Config(
                f"taskdeck-{db}",
                "taskdeck (direct upsert)",
                db,
                "core",
                "core.celery_app:app",
                settings="core.settings",
                include="bench.noop",
                env={"CELERY_BACKEND": "taskdeck.results.backend:DatabaseBackend"},
            )
        )
        rows.append(
            Config(
                f"write-behind-{db}",
                "taskdeck write-behind",
                db,
                "core",
                "core.celery_app:app",
                settings="core.settings",
                include="bench.noop",
                env={"CELERY_BACKEND": "taskdeck.results.writebehind:WriteBehindBackend"},
            )
        )
        for name in variants:
            if db not in VARIANTS[name].databases:
                continue
            rows.append(
                Config(
                    f"{name}-{db}",
                    f"variant: {VARIANTS[name].description}",
                    db,
                    "core",
                    "core.celery_app:app",
                    settings="bench.variant_settings",
                    include="bench.noop",
                    env={"BENCH_VARIANT": name},
                    rows_in_database=VARIANTS[name].rows_in_database,
                )
            )
    return rows


@contextmanager
def redis_db() -> Iterator[str]:
    """A Redis database number of our own, released (flushed) at the end."""
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        if client.set(CLAIM_KEY, token, nx=True, ex=6 * 3600):
            break
    else:
        raise SystemExit("no free Redis database number (1-15)")
    try:
        yield f"{REDIS}/{number}"
    finally:
        client.flushdb()


@contextmanager
def databases() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and a fresh SQLite file, migrated; dropped at the end."""
    import psycopg

    name = f"taskdeck_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-"))
    urls = {"postgresql": f"{POSTGRES}/{name}", "sqlite": f"sqlite:///{tmp / 'db.sqlite3'}"}
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        for url in urls.values():
            env = {**base_env(), "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "core.settings"}
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
        yield urls
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["TASKDECK_EVENTS"] = "0"  # events cost is bench/monitor_overhead.py's subject
    env["CELERY_SKIP_CHECKS"] = "1"
    return env


def config_env(config: Config, broker: str, urls: dict[str, str]) -> dict[str, str]:
    env = {**base_env(), "CELERY_BROKER": broker, **config.env}
    if config.settings:
        env["DJANGO_SETTINGS_MODULE"] = config.settings
    if config.database:
        env["DATABASE_URL"] = urls[config.database]
    return env


def client(config: Config, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "bench.client", config.client_app, *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def stored(url: str) -> int:
    """SUCCESS rows in django-celery-results' table, read directly (no Django start-up)."""
    sql = "SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'SUCCESS'"
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=20) as conn:
            return int(conn.execute(sql).fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def queue_keys(r: redis.Redis) -> list[str]:
    """The queue's lists (one per priority step used), found once: a SCAN per poll would load Redis."""
    return [key.decode() for key in r.scan_iter(match=f"{QUEUE}*", _type="list")]


def depth(r: redis.Redis, keys: list[str]) -> int:
    """Messages not yet acknowledged: waiting in the queue's lists, or delivered and unacked."""
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    pipe.hlen("unacked")
    return sum(pipe.execute())


def one_pass(config: Config, broker: str, urls: dict[str, str], n: int, latency: int, logs: Path) -> None:
    env = config_env(config, broker, urls)
    r = redis.Redis.from_url(broker)
    claim = r.get(CLAIM_KEY)
    r.flushdb()
    r.set(CLAIM_KEY, claim or b"bench", ex=6 * 3600)
    if config.database:
        client(config, env, "reset")
    client(config, env, "publish", str(n))
    keys = queue_keys(r)
    if depth(r, keys) != n:
        raise SystemExit(f"{config.key}: published {n}, found {depth(r, keys)} in the queue")
    args = [sys.executable, "-m", "celery", "-A", config.worker_app, "worker", "-Q", QUEUE]
    args += ["-P", "prefork", "-c", "2", "-l", "warning", "-n", f"bench-{config.key}@%h"]
    args += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    if config.include:
        args += ["-I", config.include]
    log = logs / f"{config.key}.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while (left := depth(r, keys)) >= n:
            check_alive(worker, log, deadline)
            time.sleep(0.002)
        start = time.monotonic()
        cpu_start, tree_start = machine_cpu(), tree_cpu(worker.pid)
        while left:
            check_alive(worker, log, deadline + 600)
            time.sleep(0.01)
            left = depth(r, keys)
        elapsed = time.monotonic() - start
        config.rates.append(n / elapsed)
        busy, total = (b - a for a, b in zip(cpu_start, machine_cpu(), strict=True))
        config.busy.append(busy / total if total else 0.0)
        config.worker_cpu.append((tree_cpu(worker.pid) - tree_start) * 1000 / n)
        if config.database and config.rows_in_database:
            # Write-behind modes acknowledge before the row is in the database:
            # how long after the drain until every row is there.
            while stored(urls[config.database]) < n:
                check_alive(worker, log, deadline + 600)
                time.sleep(0.05)
            config.flush_lag.append(time.monotonic() - start - elapsed)
        if config.database and latency and not config.latencies:
            config.latencies = json.loads(client(config, env, "latency", str(latency)))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or parts[1] == str(pid):
            total += (int(parts[11]) + int(parts[12])) / ticks
    return total


def check_alive(worker: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    if worker.poll() is not None:
        raise SystemExit(f"worker exited with {worker.returncode}; see {log}")
    if time.monotonic() > deadline:
        raise SystemExit(f"worker too slow or stuck; see {log}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def machine() -> list[str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("celery", "kombu", "Django", "django-celery-results", "psycopg", "redis")
    )
    return [
        f"CPU: {os.cpu_count()} x {model} (nproc {len(os.sched_getaffinity(0))})",
        f"Python {platform.python_version()}; {versions}",
        f"PostgreSQL {server_version()}; Redis {redis.Redis.from_url(REDIS).info()['redis_version']}; "
        f"SQLite {__import__('sqlite3').sqlite_version}",
    ]


def server_version() -> str:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres") as conn:
        row = conn.execute("show server_version").fetchone()
    return str(row[0]) if row else "?"


def report(rows: list[Config], n: int, rounds: int, loads: tuple[str, str]) -> None:
    bare = rows[0].rates
    print(f"\n{n} noop tasks per pass, {rounds} rounds, median (min-max); worker -P prefork -c 2")
    print("ratio to bare: the median over rounds of (rate / bare's rate in the same round)\n")
    print(
        "| configuration | database | tasks/s | ratio to bare | worker CPU/task | machine busy "
        "| rows in DB after drain | get() p50 | get() p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        rate = statistics.median(row.rates)
        spread = f"{min(row.rates):.0f}-{max(row.rates):.0f}"
        ratio = statistics.median(r / b for r, b in zip(row.rates, bare, strict=True))
        lag = f"+{max(row.flush_lag) * 1000:.0f} ms" if row.flush_lag else "-"
        if row.latencies:
            p50 = f"{percentile(row.latencies, 0.5) * 1000:.1f} ms"
            p99 = f"{percentile(row.latencies, 0.99) * 1000:.1f} ms"
        else:
            p50 = p99 = "-"
        print(
            f"| {row.label} | {row.database or '-'} | {rate:.0f} ({spread}) | {ratio:.2f} | "
            f"{statistics.median(row.worker_cpu):.2f} ms | {statistics.median(row.busy):.0%} | "
            f"{lag} | {p50} | {p99} |"
        )
    print()
    for line in machine():
        print(f"- {line}")
    print(f"- load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}")


def main() -> None:
    from bench.variants import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tasks", type=int, default=3000, help="noop tasks per pass (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--latency", type=int, default=100, help="round trips for the latency figures (default 100)"
    )
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated ablation rows, or 'all': {', '.join(VARIANTS)}",
    )
    parser.add_argument("--only", default="", help="comma-separated row keys to run (bare always runs)")
    args = parser.parse_args()
    # Killed: still stop the worker, drop the database and release Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    rows = configs(variants)
    if args.only:
        keep = {"bare", *args.only.split(",")}
        rows = [row for row in rows if row.key in keep]
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    logs = Path(tempfile.mkdtemp(prefix="taskdeck-bench-logs-"))
    with redis_db() as broker, databases() as urls:
        for round_ in range(args.rounds):
            for row in rows:
                one_pass(row, broker, urls, args.tasks, args.latency, logs)
                print(
                    f"round {round_ + 1}: {row.key}: {row.rates[-1]:.0f} tasks/s",
                    file=sys.stderr,
                    flush=True,
                )
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    report(rows, args.tasks, args.rounds, (load_before, load_after))
    shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
