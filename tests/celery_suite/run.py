"""Run Celery's integration suites (canvas, tasks) on taskdeck's stack: ``make test-celery``.

    python -m tests.celery_suite.run [COMBINATION ...] [-- PYTEST_ARGS]

The suites come from the installed Celery version's sdist, fetched by pip
like any package (``pip download --no-binary :all: --no-deps celery==X``) and
kept under ``build/celery-suite/``. Each combination (:data:`COMBINATIONS`)
is a broker and one of taskdeck's result backends on PostgreSQL, and a
selection of tests; the pytest plugin :mod:`tests.celery_suite.plugin`
configures the app and the worker like the reference project's.

Services: PostgreSQL (a database of the run's own, migrated), RabbitMQ (a
vhost of the run's own), and a Redis server the run starts on a free port —
the broker of the Redis combinations and the suite's side channel (its tests
read what tasks wrote to Redis). A service that does not answer fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "celery-suite"
SUITES = ["t/integration/test_canvas.py", "t/integration/test_tasks.py"]
PG = os.environ.get("TASKDECK_TEST_PG", "postgres://postgres@127.0.0.1:5432")
RABBITMQ = os.environ.get("TASKDECK_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")
#: Per-test limit: a test that hangs fails after this long instead of holding CI.
TEST_TIMEOUT = 180

#: Core settings never handed to the suite's app: its tests need their own
#: single ``celery`` queue; the URLs are the combination's.
NOT_FOR_THE_SUITE = {
    "broker_url",
    "result_backend",
    "task_queues",
    "task_routes",
    "task_default_queue",
    "beat_scheduler",
    "beat_schedule",
}


@dataclass(frozen=True)
class Combination:
    broker: str  # "redis" or "rabbitmq"
    backend: str  # a key of plugin.BACKENDS
    selection: str  # "full" or "subset" (plugin.SUBSET)

    @property
    def name(self) -> str:
        return f"{self.broker}-{self.backend}"


#: What runs where (docs/canvas.md has the timings that chose it).
COMBINATIONS = {
    c.name: c
    for c in [
        # The default on Redis gets the whole suite; RabbitMQ's default is the direct backend.
        Combination("redis", "record", "full"),
        Combination("redis", "direct", "subset"),
        Combination("redis", "writebehind", "subset"),
        Combination("rabbitmq", "direct", "subset"),
        Combination("rabbitmq", "writebehind", "subset"),
        Combination("rabbitmq", "record", "subset"),
    ]
}
#: Not in CI: Celery's own Redis result backend under the same configuration, to
#: tell taskdeck's differences from the suite's own (docs/canvas.md).
BASELINES = {c.name: c for c in [Combination("redis", "celery-redis", "full")]}


def sdist() -> Path:
    """The extracted sdist of the installed Celery version (downloaded once)."""
    celery = version("celery")
    folder = BUILD / f"celery-{celery}"
    if (folder / "t" / "integration" / "test_canvas.py").exists():
        return folder
    BUILD.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
    subprocess.run([*pip, "-d", str(BUILD), f"celery=={celery}"], check=True)
    with tarfile.open(BUILD / f"celery-{celery}.tar.gz") as tar:
        tar.extractall(BUILD, filter="data")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[int]:
    """A Redis server of this run's own, on a free port; yields the port."""
    import redis

    with tempfile.TemporaryDirectory(prefix="taskdeck-celery-suite-") as tmp:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        proc = subprocess.Popen([*argv, "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None:
                        raise SystemExit(f"redis-server exited ({proc.returncode}) on port {port}") from None
                    time.sleep(0.1)
            yield port
        finally:
            proc.terminate()
            proc.wait(30)


def database() -> str:
    """A PostgreSQL database of this run's own, migrated; returns its URL."""
    import psycopg

    name = os.environ.get("TASKDECK_TEST_DB", "test_taskdeck") + "_celery_suite"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG}/{name}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "core.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    return url


def reference_settings() -> dict[str, object]:
    """The reference project's Celery settings, as the suite's JSON override file takes them."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django

    django.setup()
    from django.conf import settings

    from taskdeck.preset import celery_preset

    # taskdeck's preset under the project's own settings, as create_celery_app applies them
    out = {name: value for name, value in celery_preset().items() if name not in NOT_FOR_THE_SUITE}
    prefix = "CELERY_"
    for key in dir(settings):
        name = key[len(prefix) :].lower()
        if key.startswith(prefix) and name not in NOT_FOR_THE_SUITE:
            out[name] = getattr(settings, key)
    json.dumps(out)  # anything the file cannot carry fails here, by name
    return out


@contextmanager
def broker(kind: str, redis_port: int) -> Iterator[str]:
    if kind == "redis":
        yield f"redis://127.0.0.1:{redis_port}/1"
        return
    sys.path.insert(0, str(ROOT))
    from bench.brokers import rabbitmq_vhost

    with rabbitmq_vhost(RABBITMQ, prefix="taskdeck-celery-suite") as url:
        yield url


def run(combo: Combination, folder: Path, redis_port: int, db_url: str, extra: list[str]) -> int:
    from tests.celery_suite.plugin import BASELINE, alias

    (folder / "integration-tests-config.json").write_text(json.dumps(reference_settings(), indent=1))
    reports = BUILD / "reports"
    reports.mkdir(exist_ok=True)
    with broker(combo.broker, redis_port) as url:
        env = {
            **os.environ,
            "TEST_BROKER": url,
            "TEST_BACKEND": (
                f"redis://127.0.0.1:{redis_port}/3" if combo.backend == BASELINE else alias(combo.backend)
            ),
            "TASKDECK_SUITE_BACKEND": combo.backend,
            "TASKDECK_SUITE_SELECTION": combo.selection,
            "TASKDECK_SUITE_RESULTS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/2",
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis_port),
            "CELERY_BROKER": url,
            "DATABASE_URL": db_url,
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder), os.environ.get("PYTHONPATH", "")]),
        }
        argv = [sys.executable, "-m", "pytest", "-p", "tests.celery_suite.plugin", "-p", "no:django"]
        argv += ["-p", "no:cacheprovider", "--rootdir", str(folder), "-c", str(folder / "pyproject.toml")]
        argv += ["-o", f"timeout={TEST_TIMEOUT}", "-rfEsxXR", "--durations=10"]
        argv += [f"--junitxml={reports / combo.name}.xml", *(extra or SUITES)]
        print(f"celery-suite: {combo.name} ({combo.selection}): {' '.join(argv[3:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(argv, cwd=folder, env=env)
        print(f"celery-suite: {combo.name} took {time.monotonic() - started:.0f} s, exit {code}", flush=True)
        return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    names = [*COMBINATIONS, *BASELINES, []]
    parser.add_argument("combinations", nargs="*", choices=names, metavar="COMBINATION")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH: the suite needs a Redis server of its own")
    folder = sdist()
    db_url = database()
    codes = {}
    with redis_server() as port:
        for name in args.combinations or list(COMBINATIONS):
            codes[name] = run({**COMBINATIONS, **BASELINES}[name], folder, port, db_url, extra)
    for name, code in codes.items():
        print(f"celery-suite: {name}: {'passed' if code == 0 else f'FAILED (exit {code})'}")
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
