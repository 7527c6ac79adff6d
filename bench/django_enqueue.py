"""What ``enqueue()`` of a Django task costs next to ``apply_async()`` of a Celery task.

Run (needs Redis and PostgreSQL on 127.0.0.1; not part of ``make test``)::

    .venv/bin/python -m bench.django_enqueue [--n 2000] [--rounds 3]

No worker: messages wait in a Redis database of the bench's own, flushed at
the end. In a fresh PostgreSQL database (migrated, dropped at the end), one
process with the project's settings sends ``--n`` of each, in turn, per round:

- ``celery``: ``maintenance.tasks.rebuild_search_index.apply_async()`` (routed
  to the low lane by its regex route);
- ``django``: ``bench.dtasks.rebuild.enqueue()`` through
  ``taskdeck.tasks.CeleryBackend``, which validates the arguments, picks the
  lane and writes the PENDING result row before it publishes;
- ``django, one transaction``: the same, all ``--n`` inside one
  ``transaction.atomic()`` (rows in the transaction, the messages sent when
  it commits): the rows without a commit each.

It prints sends per second, the ratio to ``celery``, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.results import base_env, databases, redis_db
from bench.workers import ROOT

CHILD = r"""
import json, sys, time
import django
django.setup()
from django.db import transaction
from bench.dtasks import rebuild
from maintenance.tasks import rebuild_search_index

n = int(sys.argv[1])
out = {}

def timed(name, send):
    start = time.perf_counter()
    for i in range(n):
        send(i)
    out[name] = n / (time.perf_counter() - start)


rebuild_search_index.apply_async((0,), {"seconds": 0})  # connections warm
rebuild.enqueue(0, 0)
timed("celery", lambda i: rebuild_search_index.apply_async((i,), {"seconds": 0}))
timed("django", lambda i: rebuild.enqueue(i, 0))
start = time.perf_counter()
with transaction.atomic():
    for i in range(n):
        rebuild.enqueue(i, 0)
out["django, one transaction"] = n / (time.perf_counter() - start)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.django_enqueue", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="sends of each kind per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rounds = []
    with redis_db() as broker, databases() as urls:
        env = {
            **base_env(),
            "CELERY_BROKER": broker,
            "DATABASE_URL": urls["postgresql"],
            "DJANGO_SETTINGS_MODULE": "core.settings",
        }
        for _ in range(args.rounds):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.n)], env=env, cwd=ROOT, check=True, capture_output=True
            )
            rounds.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.n} sends of each per round, {args.rounds} rounds; median per second (ratio to celery)\n")
    print("| send | per second, median (rounds) | ratio |")
    print("|---|---|---|")
    base = statistics.median(r["celery"] for r in rounds)
    for kind in rounds[0]:
        values = [r[kind] for r in rounds]
        each = " / ".join(f"{v:,.0f}" for v in values)
        median = statistics.median(values)
        print(f"| {kind} | {median:,.0f} ({each}) | {median / base:.2f} |")
    print(f"\nload average before: {' '.join(load_before)}; after: {' '.join(load_after)}")


if __name__ == "__main__":
    main()
