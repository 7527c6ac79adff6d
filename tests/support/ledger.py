"""A ledger loaded into fault-test workers: every execution of a task, kept in a Redis of the test's.

Workers load it with ``celery worker --include tests.support.ledger``
(``LEDGER_ARGS``) and find the Redis to write to in ``$TASKDECK_LEDGER_REDIS``
(``Ledger.env``). The ledger lives outside the broker under test, so a broker
restart or a cut-off host does not touch it, and outside the database, so a
database outage does not either.

Tasks (no route matches ``tests.support.ledger.*``: they go to the default
queue unless told otherwise):

- ``work(n, ms)`` sleeps ``ms`` milliseconds, then appends one record (its
  id, ``n``, the worker and process) — one line per *completed execution*, so
  a task run twice has two lines and a task lost has none; ``first_ms``
  sleeps that long more, unless the broker says the message is redelivered
  (a run that hangs until its worker is killed, then passes);
- ``keep(*args, **kwargs)`` appends its id and the arguments exactly as it
  got them (JSON), so a test can compare a retry's arguments with the first call's;
- ``poison(key)`` always raises, retried with exponential backoff and full
  jitter, until the test calls :meth:`Ledger.fix` with ``key``; each attempt
  appends its retry number, its ETA and the time it raised.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from functools import cache
from typing import Any

import redis
from celery import shared_task

ENV = "TASKDECK_LEDGER_REDIS"
DONE = "taskdeck:ledger:done"
ATTEMPTS = "taskdeck:ledger:attempts"
KEPT = "taskdeck:ledger:kept"
FIXED = "taskdeck:ledger:fixed:"
#: Extra ``celery worker`` arguments that load the ledger.
LEDGER_ARGS = ["--include", "tests.support.ledger"]
#: The poison task's retry options (exponential backoff: 1 s, 2 s, 4 s caps).
POISON_MAX_RETRIES = 3
POISON_BACKOFF = 1


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)


def _ledger() -> redis.Redis:
    return _client(os.environ[ENV])


@shared_task(bind=True, name="tests.support.ledger.work")
def work(self: Any, n: int, ms: int = 0, first_ms: int = 0, **kwargs: Any) -> int:
    delivery = self.request.delivery_info or {}
    if first_ms and not delivery.get("redelivered"):
        time.sleep(first_ms / 1000)
    if ms:
        time.sleep(ms / 1000)
    record = {
        "id": self.request.id,
        "n": n,
        "host": self.request.hostname,
        "pid": os.getpid(),
        # Set by kombu's Redis transport on a message put back from the unacked hash.
        "redelivered": bool(delivery.get("redelivered")),
    }
    _ledger().rpush(DONE, json.dumps(record))
    return n


@shared_task(bind=True, name="tests.support.ledger.keep")
def keep(self: Any, *args: Any, **kwargs: Any) -> str:
    _ledger().rpush(KEPT, json.dumps({"id": self.request.id, "args": args, "kwargs": kwargs}))
    return "kept"


class PoisonError(Exception):
    """The poison task's failure, every time until the test fixes it."""


@shared_task(
    bind=True,
    name="tests.support.ledger.poison",
    autoretry_for=(PoisonError,),
    retry_backoff=POISON_BACKOFF,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=POISON_MAX_RETRIES,
)
def poison(self: Any, key: str) -> str:
    client = _ledger()
    fixed = bool(client.exists(FIXED + key))
    attempt = {
        "id": self.request.id,
        "key": key,
        "retries": self.request.retries,
        "eta": self.request.eta,
        "at": time.time(),
        "fixed": fixed,
    }
    client.rpush(ATTEMPTS, json.dumps(attempt))
    if not fixed:
        raise PoisonError(f"poison {key!r} fails on attempt {self.request.retries + 1}")
    return f"{key} fixed"


class Ledger:
    """The test's side: what workers recorded."""

    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.client = redis.Redis.from_url(redis_url)
        self.client.delete(DONE, ATTEMPTS, KEPT)

    @property
    def env(self) -> dict[str, str]:
        """Environment a worker needs to write here."""
        return {ENV: self.url}

    def done(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(DONE, 0, -1)]

    def done_count(self) -> int:
        return int(self.client.llen(DONE))

    def unique_done(self) -> int:
        return len({r["id"] for r in self.done()})

    def kept(self) -> dict[str, dict[str, Any]]:
        """What each ``keep`` run got, by task id."""
        return {r["id"]: r for r in (json.loads(raw) for raw in self.client.lrange(KEPT, 0, -1))}

    def attempts(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(ATTEMPTS, 0, -1)]

    def fix(self, key: str) -> None:
        self.client.set(FIXED + key, "1")

    def tally(self, sent: list[str], limit: int | None = 20) -> dict[str, Any]:
        """Counts of the ledger against the ids sent: completed, lost, run twice."""
        runs = Counter(r["id"] for r in self.done())
        sent_set = set(sent)
        lost = [task_id for task_id in sent if runs[task_id] == 0]
        return {
            "sent": len(sent),
            "executions": sum(runs[t] for t in sent_set),
            "completed": sum(1 for t in sent_set if runs[t] > 0),
            "lost": len(lost),
            "lost_ids": lost[:limit],
            "run_twice_or_more": sum(1 for t in sent_set if runs[t] > 1),
            "duplicate_executions": sum(runs[t] - 1 for t in sent_set if runs[t] > 1),
            "unknown": sum(c for t, c in runs.items() if t not in sent_set),
        }
