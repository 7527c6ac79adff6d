"""A soak: N tasks through the whole stack ``taskdeck up`` runs, with every process's memory sampled.

    python -m bench soak [--tasks 100000] [--database-url URL] [--json FILE]

``taskdeck up`` runs in a temporary data folder: the embedded Redis on a unix
socket, the reference project's worker groups, beat, the recorder and the web
server, on a PostgreSQL database of the soak's own (created on the server of
``--database-url``, dropped afterwards). The soak publishes a mix of the
reference project's tasks, one per queue (high and low lanes, notifications,
default), keeping at most ``--backlog`` waiting; meanwhile it reads the JSON
API, ``/metrics`` and a dashboard page as a logged-in user would, every
``--poll`` seconds, and samples the resident memory (``/proc/PID/status``) of
every process of the stack every ``--sample`` seconds.

It prints, per process, the memory after the warm-up (the first 20 % of the
tasks) and at the end, the growth and the growth per 10,000 tasks, then the
errors: failed tasks, runs missing from the recorder's history, HTTP errors,
and ERROR/Traceback lines in the stack's logs. ``--json`` writes all of it,
samples included (tests/faults/test_soak.py reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.workers import ROOT, children, rss_kib

TOKEN = "soak-" + uuid.uuid4().hex
#: (task name, args) published in turn: one per queue of the reference project.
MIX = [
    ("orders.tasks.charge_payment", lambda i: (i, 100)),  # high lane
    ("maintenance.tasks.rebuild_search_index", lambda i: (i, 0)),  # low lane
    ("notifications:send_sms", lambda i: ("+441234567890", f"soak {i}")),  # notifications
    ("catalog.tasks.resize_image", lambda i: (i, 640)),  # default
]
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|^Traceback|Traceback \(most recent", re.M)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stack_processes(up_pid: int) -> dict[str, list[int]]:
    """The stack's processes by role; a worker's pool processes apart from its main process."""
    roles: dict[str, list[int]] = {}
    for pid in children(up_pid):
        line = cmdline(pid)
        if "redis-server" in line:
            role = "broker (redis)"
        elif " worker " in line:
            name = re.search(r"-n (\S+?)@", line)
            role = f"worker {name.group(1) if name else pid}"
            roles.setdefault(role + " pool", []).extend(children(pid))
        elif " beat" in line:
            role = "beat"
        elif "taskdeck.monitor" in line:
            role = "recorder"
        elif "gunicorn" in line or "runserver" in line:
            role = "web"
            roles.setdefault("web workers", []).extend(children(pid))  # gunicorn's worker processes
        else:
            continue
        roles.setdefault(role, []).append(pid)
    return roles


class Web:
    """The web server as a logged-in browser and a token-holding scraper see it."""

    def __init__(self, base: str) -> None:
        import http.cookiejar
        import urllib.request

        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, token: bool = False) -> int:
        import urllib.error
        import urllib.request

        headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        try:
            with self.opener.open(urllib.request.Request(self.base + path, headers=headers), timeout=60) as r:
                r.read()
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def login(self, username: str, password: str) -> None:
        import urllib.parse
        import urllib.request

        path = "/taskdeck/login/"
        self.get(path)
        csrf = next(c.value for c in self.jar if c.name == "csrftoken")
        data = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": csrf}
        )
        request = urllib.request.Request(
            self.base + path, data=data.encode(), headers={"Referer": self.base + path}
        )
        with self.opener.open(request, timeout=60) as response:
            response.read()
        if not any(c.name == "sessionid" for c in self.jar):
            raise RuntimeError("could not log in to the dashboard")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psql(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def summarize(samples: list[dict[str, Any]], tasks: int) -> dict[str, dict[str, float]]:
    """Per role: RSS (MiB) after warm-up and at the end, growth, growth per 10k tasks."""
    roles = sorted({role for s in samples for role in s["rss"]})
    out: dict[str, dict[str, float]] = {}
    for role in roles:
        points = [(s["done"], s["rss"][role] / 1024) for s in samples if role in s["rss"]]
        warm = [m for done, m in points if 0.2 * tasks <= done <= 0.4 * tasks]
        end = [m for done, m in points if done >= 0.8 * tasks]
        if not warm or not end:
            continue
        base, last = statistics.median(warm), statistics.median(end)
        span = statistics.median([d for d, _ in points if d >= 0.8 * tasks]) - statistics.median(
            [d for d, _ in points if 0.2 * tasks <= d <= 0.4 * tasks]
        )
        out[role] = {
            "after_warmup_mib": round(base, 1),
            "end_mib": round(last, 1),
            "growth_mib": round(last - base, 1),
            "growth_mib_per_10k_tasks": round((last - base) / span * 10000, 2) if span > 0 else 0.0,
        }
    return out


def run(tasks: int, database_url: str, backlog: int, poll: float, sample: float, log: Path) -> dict[str, Any]:
    server, _, _ = database_url.rpartition("/")
    db = f"taskdeck_soak_{uuid.uuid4().hex[:8]}"
    url = f"{server}/{db}"
    data = Path(tempfile.mkdtemp(prefix="tdsoak-", dir="/tmp"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "CELERY_BROKER")}
    env.update(
        DATABASE_URL=url,
        TASKDECK_DATA_DIR=str(data),
        TASKDECK_API_TOKENS=TOKEN,
        DJANGO_DEBUG="0",
        DJANGO_SETTINGS_MODULE="core.settings",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    psql(f"{server}/postgres", f'CREATE DATABASE "{db}"')
    up: subprocess.Popen[bytes] | None = None
    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=600)
        subprocess.run(
            [*manage, "createsuperuser", "--noinput", "--username", "soak", "--email", "soak@example.com"],
            env={**env, "DJANGO_SUPERUSER_PASSWORD": TOKEN},
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            up = subprocess.Popen(
                [sys.executable, "-m", "taskdeck.cli", "up", "--address", f"127.0.0.1:{port}"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything" not in log.read_text(errors="replace"):
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"taskdeck up did not start, see {log}")
            time.sleep(0.5)
        return _soak(tasks, env, url, data, port, up.pid, backlog, poll, sample, log)
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        psql(f"{server}/postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(data, ignore_errors=True)


def _soak(
    tasks: int,
    env: dict[str, str],
    url: str,
    data: Path,
    port: int,
    up_pid: int,
    backlog: int,
    poll: float,
    every: float,
    log: Path,
) -> dict[str, Any]:
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "TASKDECK_DATA_DIR", "DJANGO_SETTINGS_MODULE")})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import psycopg
    from celery import current_app

    web = Web(f"http://127.0.0.1:{port}")
    web.login("soak", TOKEN)
    # (path, with the API token): the dashboard page goes with the login session.
    pages = [("/taskdeck/api/tasks?limit=50", True), ("/taskdeck/api/health", True), ("/metrics", True)]
    pages.append(("/taskdeck/", False))
    db = psycopg.connect(url, autocommit=True)

    def count(sql: str) -> int:
        return int(db.execute(sql).fetchone()[0])  # type: ignore[index]

    def done() -> int:
        return count(
            "SELECT count(*) FROM django_celery_results_taskresult WHERE status IN ('SUCCESS', 'FAILURE')"
        )

    samples: list[dict[str, Any]] = []
    http: dict[str, int] = {}
    sent = 0
    started = time.monotonic()
    next_sample = next_poll = started
    with current_app.producer_or_acquire() as producer:
        while True:
            finished = done()
            if sent < tasks and sent - finished < backlog:
                for i in range(sent, min(tasks, sent + 500)):
                    name, args = MIX[i % len(MIX)]
                    current_app.send_task(name, args=args(i), producer=producer)
                sent = min(tasks, sent + 500)
            now = time.monotonic()
            if now >= next_poll:
                for path, token in pages:
                    status = web.get(path, token=token)
                    http[str(status)] = http.get(str(status), 0) + 1
                next_poll = now + poll
            if now >= next_sample:
                rss = {
                    role: sum(rss_kib(p) or 0 for p in pids) for role, pids in stack_processes(up_pid).items()
                }
                samples.append({"t": round(now - started, 1), "done": finished, "rss": rss})
                next_sample = now + every
            if finished >= tasks:
                break
            time.sleep(0.2)
    elapsed = time.monotonic() - started
    history = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        history = count("SELECT count(*) FROM taskdeck_taskrun WHERE state IN ('SUCCESS', 'FAILURE')")
        if history >= tasks:
            break
        time.sleep(1)
    failed = count("SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'FAILURE'")
    db.close()
    text = log.read_text(errors="replace")
    error_lines = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    return {
        "tasks": tasks,
        "seconds": round(elapsed, 1),
        "tasks_per_second": round(tasks / elapsed, 1),
        "failed_tasks": failed,
        "missing_from_history": max(tasks - history, 0),
        "http_statuses": http,
        "http_errors": sum(n for code, n in http.items() if code != "200"),
        "log_error_lines": len(error_lines),
        "log_error_samples": error_lines[:5],
        "memory": summarize(samples, tasks),
        "samples": samples,
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Soak: {result['tasks']:,} tasks in {result['seconds']:,} s ({result['tasks_per_second']} tasks/s), "
        f"{result['machine']['cpus']} CPUs, load {result['machine']['loadavg'][0]:.1f}",
        "",
        "| process | RSS after warm-up (MiB) | RSS at end (MiB) | growth (MiB) | per 10k tasks (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for role, m in result["memory"].items():
        lines.append(
            f"| {role} | {m['after_warmup_mib']} | {m['end_mib']} | {m['growth_mib']} | "
            f"{m['growth_mib_per_10k_tasks']} |"
        )
    lines += [
        "",
        f"Errors: failed tasks {result['failed_tasks']}, runs missing from the history "
        f"{result['missing_from_history']}, HTTP errors {result['http_errors']} of "
        f"{sum(result['http_statuses'].values())} requests, "
        f"ERROR/Traceback log lines {result['log_error_lines']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server to make the soak's database on (its database name is ignored)",
    )
    parser.add_argument("--backlog", type=int, default=2000, help="most tasks waiting at once")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between reads of the web server")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between memory samples")
    parser.add_argument(
        "--log",
        type=Path,
        default=Path(tempfile.gettempdir()) / "taskdeck-soak-up.log",
        help="the stack's output",
    )
    parser.add_argument("--json", type=Path, help="write the figures and samples here")
    args = parser.parse_args(argv)
    result = run(args.tasks, args.database_url, args.backlog, args.poll, args.sample, args.log)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
