"""The dashboard at a million task runs: server time of the task list with each filter, and of the overview.

Run (needs PostgreSQL on 127.0.0.1 for the PostgreSQL half; not part of ``make test``)::

    .venv/bin/python -m bench.dashboard                      # both databases, 1,000,000 runs
    .venv/bin/python -m bench.dashboard --db sqlite --rows 200000 --repeat 20

For each database (SQLite in WAL mode in a temporary folder, and a PostgreSQL
database of its own, ``taskdeck_bench_dash``): migrate, fill the monitor's
tables as the recorder would have after a week (bench/dashboard_data.py:
runs, rollups per minute, quarter hour and hour, two days of queue samples
every 5 s, workers), then request every page with Django's test client as a
logged-in superuser, ``--repeat`` times each after one warm-up request, and
print p50/p95 of the server time: the whole Django request (middleware,
session, queries, template), no network and no WSGI server. Each database
runs in a child process of its own.

With it, the CPU time each request costs: the web process's (p95) and, on
PostgreSQL, its database backend's (mean, read from /proc). On a machine
other processes keep busy, server time grows with the wait for a core; CPU
time is near what the request takes on an idle machine.

``--explain`` runs each request's queries again under EXPLAIN ANALYZE
instead (PostgreSQL), and lists which request reads each index of the run
table: an index no request reads is paid by every write of the recorder for nothing.

The chart data (``/api/series``) is measured twice: warm (settled buckets in
the cache, as every refresh after the first) and cold (cache emptied before
each request: the first chart after a start, or after SERIES_CACHE_TTL).

Then the main pages again as users whose access scope is one team's tasks
(:data:`SCOPES`): the same requests through the scope's filters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
PG_DB = os.environ.get("BENCH_DASHBOARD_DB", "taskdeck_bench_dash")


def cases(ids: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(group, label, url) of every request measured."""
    t = "/taskdeck/tasks/"
    a = "/taskdeck/api/"
    return [
        ("tasks", "no filter (first page)", t),
        ("tasks", "state=FAILURE", t + "?state=FAILURE"),
        ("tasks", "state=STARTED (rare)", t + "?state=STARTED"),
        ("tasks", "state=SUCCESS,FAILURE", t + "?state=SUCCESS&state=FAILURE"),
        ("tasks", "name (common)", t + "?name=catalog.tasks.resize_image"),
        ("tasks", "name (rare: 0.1%)", t + "?name=maintenance.tasks.purge_expired_sessions"),
        ("tasks", "queue", t + "?queue=low_priority"),
        ("tasks", "worker", t + "?worker=notifications%40web-2"),
        ("tasks", "worker (retired 5 days ago)", t + "?worker=default%40web-old"),
        ("tasks", "queue (retired 5 days ago)", t + "?queue=sms"),
        ("tasks", "name (renamed 5 days ago)", t + "?name=notifications.tasks.send_sms"),
        ("tasks", "state=FAILURE + name (renamed)", t + "?state=FAILURE&name=notifications.tasks.send_sms"),
        ("tasks", "since=1h", t + "?since=1h"),
        ("tasks", "since=24h", t + "?since=24h"),
        ("tasks", "search: a task id", t + f"?q={ids['task_id']}"),
        ("tasks", "search: id prefix (8 chars)", t + f"?q={ids['task_id'][:8]}"),
        ("tasks", "search: part of a name", t + "?q=send_"),
        ("tasks", "search: no match", t + "?q=no-such-task"),
        ("tasks", "state=FAILURE + queue", t + "?state=FAILURE&queue=notifications"),
        (
            "tasks",
            "state=FAILURE + name (rare)",
            t + "?state=FAILURE&name=maintenance.tasks.rebuild_search_index",
        ),
        ("tasks", "page 10,000 (keyset after=)", t + f"?after={ids['deep']}"),
        ("pages", "overview", "/taskdeck/"),
        ("pages", "overview live part (htmx)", "/taskdeck/?fragment=live"),
        ("pages", "overview 7d", "/taskdeck/?window=7d"),
        ("pages", "task detail (failed)", f"/taskdeck/tasks/{ids['failed']}/"),
        ("pages", "workflow graph", f"/taskdeck/tasks/{ids['failed']}/workflow/"),
        ("pages", "task detail (2,000-run group)", f"/taskdeck/tasks/{ids['member']}/"),
        ("pages", "workflow (2,000-run group)", f"/taskdeck/tasks/{ids['member']}/workflow/"),
        ("pages", "failures (24h)", "/taskdeck/failures/"),
        ("pages", "failures (7d)", "/taskdeck/failures/?since=7d"),
        ("pages", "queues", "/taskdeck/queues/"),
        ("pages", "workers", "/taskdeck/workers/"),
        ("pages", "audit", "/taskdeck/audit/"),
        ("pages", "dead letters", "/taskdeck/dead-letters/"),
        ("api", "api/tasks (first page)", a + "tasks"),
        ("api", "api/tasks limit=500", a + "tasks?limit=500"),
        ("api", "api/tasks state=FAILURE", a + "tasks?state=FAILURE"),
        ("api", "api/tasks since (24h)", a + f"tasks?since={ids['day_ago']}"),
        ("api", "api/tasks q=id prefix", a + f"tasks?q={ids['task_id'][:8]}"),
        ("api", "api/tasks queue (retired)", a + "tasks?queue=sms"),
        ("api", "api/tasks name (renamed)", a + "tasks?name=notifications.tasks.send_sms"),
        ("api", "api/tasks/<id> (2,000-run group)", a + f"tasks/{ids['member']}"),
        ("api", "api/stats 5m", a + "stats"),
        ("api", "api/stats 24h", a + "stats?window=86400"),
        ("api", "api/stats 7d", a + "stats?window=604800"),
        ("api", "api/stats 7d, one task", a + "stats?window=604800&name=catalog.tasks.resize_image"),
        ("api", "api/stats 7d, one queue", a + "stats?window=604800&queue=default"),
        ("api", "api/queues", a + "queues"),
        ("api", "api/queues/<name>/samples (2 days, limit 5000)", a + "queues/default/samples?limit=5000"),
        ("api", "api/workers", a + "workers"),
        ("charts", "series 1h (warm)", "/taskdeck/api/series?window=3600"),
        ("charts", "series 24h (warm)", "/taskdeck/api/series?window=86400"),
        ("charts", "series 7d (warm)", "/taskdeck/api/series?window=604800"),
        ("charts", "series 1h (cold)", "cold:/taskdeck/api/series?window=3600"),
        ("charts", "series 24h (cold)", "cold:/taskdeck/api/series?window=86400"),
        ("charts", "series 7d (cold)", "cold:/taskdeck/api/series?window=604800"),
        ("charts", "series 7d, one queue (cold)", "cold:/taskdeck/api/series?window=604800&queue=default"),
        *(
            (f"scoped to {pattern}", f"[{pattern}] {label}", f"as:{pattern}|{path}")
            for pattern in SCOPES
            for label, path in (
                ("tasks: no filter (first page)", t),
                ("tasks: state=FAILURE", t + "?state=FAILURE"),
                ("tasks: search, part of a name", t + "?q=tasks."),
                ("overview", "/taskdeck/"),
                ("failures (24h)", "/taskdeck/failures/"),
                ("audit log", "/taskdeck/audit/"),
                ("workers", "/taskdeck/workers/"),
                ("api/workers", "/taskdeck/api/workers"),
                ("api/tasks", "/taskdeck/api/tasks"),
                ("series 24h (warm)", "/taskdeck/api/series?window=86400"),
                ("series 24h (cold)", "cold:/taskdeck/api/series?window=86400"),
            )
        ),
    ]


#: Task-name patterns of the scoped users measured: 12% of the runs, and 2% (the rare case).
SCOPES = ("reports.*", "maintenance.*")


def scoped_clients() -> dict[str, Any]:
    """A logged-in client per pattern of :data:`SCOPES`: staff in a group scoped to it."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.test import Client

    from taskdeck.models import AccessScope

    clients = {}
    for pattern in SCOPES:
        group, _ = Group.objects.get_or_create(name=f"bench {pattern}")
        group.permissions.add(Permission.objects.get(codename="view_dashboard"))
        AccessScope.objects.get_or_create(group=group, tasks=pattern)
        user, _ = get_user_model().objects.get_or_create(username=f"bench {pattern}", is_staff=True)
        user.groups.add(group)
        clients[pattern] = Client()
        clients[pattern].force_login(user)
    return clients


def child(url: str, rows: int, repeat: int, reuse: bool, only: list[str], explain: bool) -> dict[str, Any]:
    import datetime as dt

    import django

    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "core.settings"
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from bench import dashboard_data
    from taskdeck.models import TaskRun

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    if reuse and TaskRun.objects.count() == rows:
        filled = {"runs": rows, "reused": True}
    else:
        filled = dashboard_data.fill(rows)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
    fill_seconds = time.monotonic() - started
    users = get_user_model()
    admin = users.objects.filter(username="bench").first() or users.objects.create_superuser("bench", "", "x")
    client = Client()
    client.force_login(admin)
    ids = {
        "task_id": TaskRun.objects.order_by("id").values_list("task_id", flat=True)[rows // 2],
        "deep": TaskRun.objects.order_by("-id").values_list("id", flat=True)[min(50 * 10_000, rows - 1)],
        "failed": TaskRun.objects.filter(state="FAILURE")
        .order_by("-id")
        .values_list("task_id", flat=True)[0],
        "member": TaskRun.objects.filter(group_id=dashboard_data.GROUP_ID)
        .order_by("id")
        .values_list("task_id", flat=True)
        .first()
        or "",
        "day_ago": (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    sizes = index_sizes(connection)
    database_cpu = backend_cpu(connection)
    for label, size in sizes.items():
        print(f"  {connection.vendor:10} {label:38} {size / 2**20:8.1f} MB", flush=True)
    selected = [
        (group, label, path)
        for group, label, path in cases(ids)
        if (not only or any(o in label for o in only)) and (ids["member"] or "group" not in label)
    ]
    scoped = scoped_clients()
    if explain:
        return {"vendor": connection.vendor, "explained": explain_cases(client, scoped, selected, sizes)}
    # As in a served process (core/wsgi.py, taskdeck/web.py): start-up's objects out of collections.
    from taskdeck.startup import settle

    settle()
    results = []
    for group, label, path in selected:
        asking = client
        if path.startswith("as:"):
            pattern, _, path = path.removeprefix("as:").partition("|")
            asking = scoped[pattern]
        cold = path.startswith("cold:")
        path = path.removeprefix("cold:")
        times, cpu, db_cpu = [], [], 0.0
        runs = max(3, repeat // 5) if cold else repeat
        for i in range(runs + (0 if cold else 1)):
            if cold:
                cache.clear()
            c0, d0 = time.process_time(), database_cpu()
            t0 = time.perf_counter()
            response = asking.get(path)
            elapsed = (time.perf_counter() - t0) * 1000
            c1, d1 = time.process_time(), database_cpu()
            assert response.status_code == 200, (path, response.status_code)
            if cold or i > 0:  # the first warm request warms up
                times.append(elapsed)
                cpu.append((c1 - c0) * 1000)
                db_cpu += (d1 - d0) * 1000
        times.sort()
        cpu.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        cpu95 = cpu[min(len(cpu) - 1, round(0.95 * (len(cpu) - 1)))]
        results.append(
            {
                "group": group,
                "label": label,
                "p50": statistics.median(times),
                "p95": p95,
                "n": len(times),
                "cpu_p95": cpu95,
                "db_cpu": db_cpu / len(times),
            }
        )
        print(
            f"  {connection.vendor:10} {label:38} p50 {results[-1]['p50']:7.1f} ms  p95 {p95:7.1f} ms"
            f"  CPU p95 {cpu95:6.1f} ms + database {db_cpu / len(times):6.1f} ms",
            flush=True,
        )
    return {
        "vendor": connection.vendor,
        "filled": filled,
        "fill_seconds": fill_seconds,
        "results": results,
        "sizes": sizes,
    }


def explain_cases(
    client: Any, scoped: dict[str, Any], selected: list[tuple[str, str, str]], sizes: dict[str, int]
) -> Any:
    """Each request's queries, run again under EXPLAIN ANALYZE: their time and the indexes they read.

    Prints the queries over 5 ms with the nodes of their plans, then which
    request needs each index of the run table (PostgreSQL only).
    """
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    used: dict[str, set[str]] = {
        name: set() for name in sizes if name.startswith("taskdeck_taskrun") or "_run_" in name
    }
    for _group, label, path in selected:
        asking = client
        if path.startswith("as:"):
            pattern, _, path = path.removeprefix("as:").partition("|")
            asking = scoped[pattern]
        cold = path.startswith("cold:")
        path = path.removeprefix("cold:")
        if cold:
            cache.clear()
        else:
            asking.get(path)
        with CaptureQueriesContext(connection) as captured:
            assert asking.get(path).status_code == 200, path
        total = 0.0
        notes = []
        for query in captured.captured_queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
                plan = cursor.fetchone()[0][0]
            ms = plan["Execution Time"]
            total += ms
            nodes = list(_nodes(plan["Plan"]))
            for node in nodes:
                if node.get("Index Name") in used:
                    used[node["Index Name"]].add(label)
            if ms >= 5:
                shape = ", ".join(
                    f"{n['Node Type']}"
                    + (f" {n['Index Name']}" if "Index Name" in n else "")
                    + f" {n.get('Actual Rows', 0):.0f}r"
                    for n in nodes
                )
                notes.append(f"      {ms:7.1f} ms  {shape}\n        {sql[:300]}")
        print(f"  {label:38} {len(captured.captured_queries):3} queries, {total:7.1f} ms in the database")
        for note in notes:
            print(note)
    print("\nrun table indexes and the requests that read them:")
    for name, labels in used.items():
        print(f"  {name:45} {sizes[name] / 2**20:6.1f} MB  {', '.join(sorted(labels)) or 'NONE'}")
    return {name: sorted(labels) for name, labels in used.items()}


def _nodes(plan: dict[str, Any]) -> Any:
    yield plan
    for sub in plan.get("Plans", []):
        yield from _nodes(sub)


def backend_cpu(connection: Any) -> Any:
    """A function giving the CPU seconds used so far by the PostgreSQL backend serving ``connection``.

    Read from /proc (the server runs on this machine; clock ticks of 10 ms,
    so only sums over many requests mean anything). On a machine other
    processes load, the request's wall time grows with the wait for a core;
    its CPU time (the web process's and the database's) hardly does.
    """
    if connection.vendor != "postgresql":
        return lambda: 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    return read


def index_sizes(connection: Any) -> dict[str, int]:
    """Bytes of the run table's rows and of each of its indexes (PostgreSQL; SQLite: the file)."""
    from taskdeck.models import TaskRun

    table = TaskRun._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute("PRAGMA page_size")
            return {"database file": pages * cursor.fetchone()[0]}
        cursor.execute("SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", [table, table])
        rows, indexes = cursor.fetchone()
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
            " WHERE indrelid = %s::regclass ORDER BY 2 DESC",
            [table],
        )
        return {"run table rows": rows, "run table indexes": indexes, **dict(cursor.fetchall())}


def run_child(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "testserver",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),  # this checkout's taskdeck
    }
    argv = [sys.executable, "-m", "bench.dashboard", "--child", url, "--rows", str(args.rows)]
    argv += ["--repeat", str(args.repeat)] + (["--reuse"] if args.reuse else [])
    argv += [f"--only={o}" for o in args.only] + (["--explain"] if args.explain else [])
    print(f"{name}: {url}", flush=True)
    result = None
    with subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@@RESULT@@"):
                result = json.loads(line.removeprefix("@@RESULT@@"))
            else:
                print(line, end="", flush=True)
    if proc.returncode or result is None:
        raise SystemExit(f"the {name} run failed (exit {proc.returncode})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the rows of an earlier run of the same size"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="measure only the requests whose label contains this"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="PostgreSQL: EXPLAIN ANALYZE every query of each request instead of timing; list index use",
    )
    parser.add_argument("--sqlite-dir", default=os.path.join(tempfile.gettempdir(), "taskdeck-bench-dash"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.rows, args.repeat, args.reuse, args.only, args.explain)
        print("@@RESULT@@" + json.dumps(result, default=str))
        return
    outcomes = {}
    if args.db in ("sqlite", "both"):
        Path(args.sqlite_dir).mkdir(parents=True, exist_ok=True)
        outcomes["SQLite"] = run_child("sqlite", f"sqlite:///{args.sqlite_dir}/db.sqlite3", args)
    if args.db in ("postgres", "both"):
        subprocess.run(
            ["psql", POSTGRES + "/postgres", "-qc", f"CREATE DATABASE {PG_DB}"],
            capture_output=True,
            check=False,
        )
        outcomes["PostgreSQL"] = run_child("postgres", f"{POSTGRES}/{PG_DB}", args)
    if not args.explain:
        print_tables(outcomes, args)


def print_tables(outcomes: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(outcomes)
    print(
        f"\n{args.rows:,} task runs; server time in ms, p50 / p95 of {args.repeat} requests (cold: fewer)\n"
    )
    print("| request | " + " | ".join(f"{n} p50 | {n} p95 | {n} CPU p95 + db" for n in names) + " |")
    print("|---|" + "---:|---:|---:|" * len(names))
    labels = list(dict.fromkeys(r["label"] for n in names for r in outcomes[n]["results"]))
    by_label = {n: {r["label"]: r for r in outcomes[n]["results"]} for n in names}
    for label in labels:
        cells = []
        for n in names:
            r = by_label[n].get(label)
            cpu = f"{r.get('cpu_p95', 0):.1f} + {r.get('db_cpu', 0):.1f}" if r else "-"
            cells += [f"{r['p50']:.1f}", f"{r['p95']:.1f}", cpu] if r else ["-", "-", "-"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for n in names:
        sizes = outcomes[n]["sizes"].items()
        print(f"\n{n} sizes, MB: " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes))
    for n in names:
        warm = [r for r in outcomes[n]["results"] if "(cold)" not in r["label"]]
        slow = [r["label"] for r in warm if r["p95"] >= 100]
        print(f"\n{n}: {len(warm) - len(slow)} of {len(warm)} warm requests with p95 under 100 ms", end="")
        print(f"; over: {', '.join(slow)}" if slow else "")


if __name__ == "__main__":
    main()
