"""What capturing the payload at publish costs: ``apply_async()`` with and without it, and plain Celery.

Run (needs Redis on 127.0.0.1; not part of ``make test``)::

    .venv/bin/python -m bench payloads [--n 3000] [--rounds 3]

No worker: messages wait in a Redis database of the bench's own, flushed at
the end. One process with the project's settings (task-sent events on, as
the project has them) sends ``--n`` messages per kind and per call, in turn,
per round:

- ``plain Celery``: an app made with ``Celery()`` (Celery's own publisher);
- ``taskdeck, capture off``: the project's app with ``TASKDECK["PAYLOADS"]["ENABLED"] = False``
  (taskdeck's publisher: the size limit, errors naming the argument);
- ``taskdeck, capture on``: the project's app as shipped.

Calls: ``small`` (``rebuild_search_index(i, seconds=0)``), ``3,000 chars``
(one 3,000-character string argument), ``password`` (keyword arguments, one of
them redacted). It prints sends per second (median of the rounds) and the
ratio to plain Celery, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.results import base_env, redis_db
from bench.workers import ROOT

CHILD = r"""
import json, sys, time
import django
django.setup()
from celery import Celery
from django.conf import settings
from django.test.utils import override_settings
from core import celery_app

n = int(sys.argv[1])
plain = Celery("plain", set_as_current=False, fixups=[])
plain.config_from_object("django.conf:settings", namespace="CELERY")
plain.conf.task_send_sent_event = True
NAME = "maintenance.tasks.rebuild_search_index"
CALLS = {
    "small": lambda i: ((i,), {"seconds": 0}),
    "3,000 chars": lambda i: (("x" * 3000,), {"seconds": 0}),
    "password": lambda i: ((i,), {"user": "ann", "password": "hunter2", "seconds": 0}),
}
out = {}

def timed(app, call):
    app.send_task(NAME, *call(0), queue="low_priority")  # connections warm
    start = time.perf_counter()
    for i in range(n):
        app.send_task(NAME, *call(i), queue="low_priority")
    return n / (time.perf_counter() - start)

off = {**settings.TASKDECK, "PAYLOADS": {"ENABLED": False}}
for label, call in CALLS.items():
    out[f"plain Celery|{label}"] = timed(plain, call)
    with override_settings(TASKDECK=off):
        out[f"taskdeck, capture off|{label}"] = timed(celery_app, call)
    out[f"taskdeck, capture on|{label}"] = timed(celery_app, call)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench payloads", description=__doc__)
    parser.add_argument(
        "--n", type=int, default=3000, help="sends per kind and call per round (default 3000)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rounds = []
    with redis_db() as broker:
        env = {
            **base_env(),
            "TASKDECK_EVENTS": "1",  # the payload travels in the task-sent event
            "CELERY_BROKER": broker,
            "DJANGO_SETTINGS_MODULE": "core.settings",
        }
        for _ in range(args.rounds):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.n)], env=env, cwd=ROOT, check=True, capture_output=True
            )
            rounds.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"{args.n} sends per kind and call, {args.rounds} rounds; median per second (ratio to plain Celery)\n"
    )
    calls = list(dict.fromkeys(key.split("|")[1] for key in rounds[0]))
    kinds = list(dict.fromkeys(key.split("|")[0] for key in rounds[0]))
    print("| publisher | " + " | ".join(calls) + " |")
    print("|---" * (len(calls) + 1) + "|")
    for kind in kinds:
        cells = []
        for call in calls:
            median = statistics.median(r[f"{kind}|{call}"] for r in rounds)
            base = statistics.median(r[f"plain Celery|{call}"] for r in rounds)
            cells.append(f"{median:,.0f} ({median / base:.2f})")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print(f"\nload average before: {' '.join(load_before)}; after: {' '.join(load_after)}")


if __name__ == "__main__":
    main()
