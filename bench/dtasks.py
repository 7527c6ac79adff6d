"""The priority bench's task as a Django task (``django.tasks``; the backport on Django 5.2).

Workers of the Django-tasks cases load it (``-I bench.dtasks``) and so
register it with Celery through whichever backend ``TASKS`` names; the same
function as ``maintenance.tasks.rebuild_search_index``: it sleeps.

:func:`send` (run by bench/priority.py in a process of the case's settings:
``bench.priority.DJANGO_SENDER``) enqueues ``COUNT`` of them at ``PRIORITY`` through the configured
backend, ``SPACING`` seconds apart, and prints ``<result id> <time sent>``
per task. Not ``python -m bench.dtasks``: the task would then be
``__main__.rebuild``, which no worker can import.
"""

from __future__ import annotations

import time

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task

DURATION = 0.05


@task
def rebuild(shard: int, seconds: float = DURATION) -> int:
    time.sleep(seconds)
    return shard


def send(argv: list[str]) -> None:
    priority, count = int(argv[0]), int(argv[1])
    start = int(argv[2]) if len(argv) > 2 else 0
    spacing = float(argv[3]) if len(argv) > 3 else 0.0
    at_priority = rebuild.using(priority=priority)
    out = []
    for i in range(count):
        result = at_priority.enqueue(start + i)
        out.append(f"{result.id} {time.time():.6f}")
        if spacing:
            time.sleep(spacing)
    print("\n".join(out), flush=True)
