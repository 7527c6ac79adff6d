"""Web servers side by side: the dashboard, the API, the login page and a static file under concurrent load.

Run (not part of ``make test``)::

    .venv/bin/python -m bench.webserver                  # runserver, gunicorn, uvicorn; 8 clients, 8 s each
    .venv/bin/python -m bench.webserver --clients 16 --seconds 15 --servers gunicorn uvicorn

The reference project on the embedded default's database (SQLite in WAL
mode in a temporary data folder, migrated, with a superuser and an API
token), ``DEBUG`` off. Each server listens on a free port of 127.0.0.1 with
``--workers`` processes (runserver: one process, a thread per connection);
``--clients`` threads each keep one HTTP/1.1 connection open (keep-alive, as
a browser and Prometheus do) and request one page for ``--seconds``.
Printed: requests per second and p50/p95 latency per page and server, and
each server's ratio to runserver.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-" + secrets.token_hex(16)
PAGES = {
    "dashboard": "/taskdeck/",
    "API /tasks": "/taskdeck/api/tasks?limit=50",
    "login page": "/taskdeck/login/",
    "static file": "/static/taskdeck/dashboard.css",
}


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load} at start"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(name: str, port: int, workers: int) -> list[str]:
    python = sys.executable
    address = f"127.0.0.1:{port}"
    if name == "runserver":
        return [python, "manage.py", "runserver", address, "--noreload"]
    if name == "gunicorn":  # as `taskdeck up` runs it
        from taskdeck.cli import web_argv

        return web_argv(address, workers)
    if name == "uvicorn":
        return [python, "-m", "uvicorn", "core.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--timeout-keep-alive", "75"]  # fmt: skip
    raise SystemExit(f"unknown server {name!r}")


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not listen")


def session_cookie(port: int) -> str:
    """Log in as the bench's superuser through the dashboard's form; the session cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/taskdeck/login/")
    page = conn.getresponse()
    body = page.read().decode()
    csrf = re.search(r"csrftoken=([^;]+)", page.getheader("Set-Cookie", "")).group(1)  # type: ignore[union-attr]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)  # type: ignore[union-attr]
    form = f"csrfmiddlewaretoken={token}&username=bench&password=bench-Pass-42"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={csrf}"}
    conn.request("POST", "/taskdeck/login/", body=form, headers=headers)
    answer = conn.getresponse()
    answer.read()
    found = re.search(r"sessionid=([^;]+)", answer.getheader("Set-Cookie", ""))
    if answer.status != 302 or not found:
        raise SystemExit(f"login failed: {answer.status}")
    return f"sessionid={found.group(1)}"


def load(
    port: int, path: str, headers: dict[str, str], clients: int, seconds: float
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            if response.status != 200:
                errors.append(str(response.status))
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print(f"    {path}: {len(errors)} errors, e.g. {errors[0]}", file=sys.stderr)
    return len(latencies), latencies


def prepare(env: dict[str, str]) -> None:
    for args in (
        ["migrate", "-v", "0"],
        ["createsuperuser", "--noinput", "--username", "bench", "--email", "b@x.org"],
    ):
        subprocess.run([sys.executable, "manage.py", *args], env=env, cwd=ROOT, check=True)
    code = (
        "import django; django.setup(); from django.contrib.auth import get_user_model; "
        "u = get_user_model().objects.get(username='bench'); u.set_password('bench-Pass-42'); u.save()"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=["runserver", "gunicorn", "uvicorn"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="taskdeck-bench-web-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    env.update(
        TASKDECK_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="core.settings", TASKDECK_API_TOKENS=TOKEN,
        PYTHONPATH=str(ROOT),
    )  # fmt: skip
    prepare(env)
    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name in args.servers:
        if name != "runserver" and importlib.util.find_spec(name) is None:
            print(f"{name} is not installed: skipped (pip install {name})", file=sys.stderr)
            continue
        port = free_port()
        proc = subprocess.Popen(
            server_argv(name, port, args.workers),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, proc)
            cookie = session_cookie(port)
            results[name] = {}
            for page, path in PAGES.items():
                headers = {"Authorization": f"Bearer {TOKEN}"} if "API" in page else {"Cookie": cookie}
                load(port, path, headers, args.clients, 1.0)  # warm-up
                count, latencies = load(port, path, headers, args.clients, args.seconds)
                q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [0.0] * 19
                results[name][page] = (count / args.seconds, q[9] * 1000, q[18] * 1000)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{machine_line()}; {args.clients} keep-alive clients, {args.seconds:g} s per page, "
          f"{args.workers} worker processes (runserver: 1)\n")  # fmt: skip
    print("| page | server | req/s | p50 ms | p95 ms | req/s vs runserver |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for page in PAGES:
        base = results.get("runserver", {}).get(page, (0.0, 0.0, 0.0))[0]
        for name in results:
            rate, p50, p95 = results[name][page]
            ratio = f"{rate / base:.1f}x" if base else "-"
            print(f"| {page} | {name} | {rate:.0f} | {p50:.1f} | {p95:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
