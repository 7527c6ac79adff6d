"""What the bench runs inside one configuration's environment (its app, settings, database).

    python -m bench.client APP publish N      enqueue N noop tasks on the "bench" queue
    python -m bench.client APP latency N      N sequential send + AsyncResult.get() round trips
    python -m bench.client APP reset          delete result rows (Django apps only)
    python -m bench.client APP stored         print how many SUCCESS rows the database holds

APP is a ``module:attribute`` Celery app. Each configuration is published and
probed through its own app, as its users would do it.
"""

from __future__ import annotations

import json
import os
import sys
import time

from kombu.utils.imports import symbol_by_name

QUEUE = "bench"
TASK = "bench.noop"


def publish(app: object, n: int) -> None:
    """As ``task.delay()`` sends: each task takes a producer from the app's pool and gives it back."""
    for _ in range(n):
        app.send_task(TASK, queue=QUEUE)  # type: ignore[attr-defined]


def latency(app: object, n: int) -> None:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        app.send_task(TASK, queue=QUEUE).get(timeout=60)  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - start)
    print(json.dumps(samples))


def reset() -> None:
    from django_celery_results.models import ChordCounter, GroupResult, TaskResult

    TaskResult.objects.all().delete()
    GroupResult.objects.all().delete()
    ChordCounter.objects.all().delete()


def stored() -> None:
    from django_celery_results.models import TaskResult

    print(TaskResult.objects.filter(status="SUCCESS").count())


def main() -> None:
    app_path, command, *rest = sys.argv[1:]
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    app = symbol_by_name(app_path)
    if command == "publish":
        publish(app, int(rest[0]))
    elif command == "latency":
        latency(app, int(rest[0]))
    elif command == "reset":
        reset()
    elif command == "stored":
        stored()
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
