"""Write-behind: results readable at once from Redis, written to the database in batches.

Use it in place of ``django-db``::

    CELERY_RESULT_BACKEND = "taskdeck.results.writebehind:WriteBehindBackend"

A stored state goes to Redis — the broker's, or ``TASKDECK["RESULTS"]["REDIS_URL"]``
— as a pipeline of two commands:

- ``SET <prefix>meta:<task id>`` the state as Celery's key-value backends
  store it (status, result, traceback, children, extended fields), with a
  time to live (``TTL``): what ``AsyncResult`` reads;
- ``RPUSH <prefix>pending`` the ``TaskResult`` row of that state.

The pipeline is sent by a thread of the worker process (:class:`Shipper`),
not by the task's own thread: the task is acknowledged and the next one
started while its result travels. :mod:`taskdeck.results.flusher`, a thread
in every worker's main process, then moves the pending rows into
django-celery-results' table in batches, one upsert statement per batch, in
the order they were pushed. docs/results.md has the measured delays and what
a crash can lose at each step.

Reads (``AsyncResult.get()``, ``.state``, group joins, the chord counter's
readiness check) look in Redis first and fall back to the database, so a
result is visible before its row is written and after its Redis copy
expired. Groups (``GroupResult.save()``) and chords (the ``ChordCounter``
row) are written to the database directly, as ``django-db`` does; a chord
header task's state is in Redis before the counter is decremented.

STARTED, with ``CELERY_TASK_TRACK_STARTED``: held for ``STARTED_DELAY``
seconds (default 0.05) and stored only if the task is still running then; a
task that finishes sooner stores one state, its final one, whose row carries
the ``date_started`` taken when it started. ``STARTED_DELAY = 0`` stores
every STARTED.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import states
from django.utils import timezone

from taskdeck import conf
from taskdeck.errors import ConfigurationError
from taskdeck.results.backend import DatabaseBackend

logger = logging.getLogger("taskdeck.results")

#: Where a payload keeps what only the database row needs (popped by readers).
ROW_KEY = "_taskdeck_row"

#: Every Shipper of this process, flushed when a worker process exits.
_shippers: list[Shipper] = []


def flush_all(timeout: float = 30) -> None:
    """Wait until the states this process stored are in Redis (``worker_process_shutdown``)."""
    for shipper in _shippers:
        if shipper.pid == os.getpid() and not shipper.flush(timeout):
            logger.error("result states still unsent after %ss at process exit", timeout)


def redis_url(app: Any) -> str:
    """``TASKDECK["RESULTS"]["REDIS_URL"]``, else the broker's URL when the broker is Redis."""
    from taskdeck import brokers
    from taskdeck.brokers.redis import client_url

    url = conf.get()["RESULTS"]["REDIS_URL"]
    if url:
        return str(url)
    broker = app.conf.broker_url or ""
    if brokers.for_url(broker).name != "redis" or broker.startswith("sentinel"):
        raise ConfigurationError(
            f"the write-behind result backend keeps results in Redis, and the broker {broker!r} is "
            "not a Redis URL it can use: set TASKDECK['RESULTS']['REDIS_URL'] to a redis:// URL, "
            "or use taskdeck.results.backend:DatabaseBackend."
        )
    return client_url(broker)


@dataclass
class State:
    """One stored state on its way to Redis.

    ``payload`` is Celery's result meta plus, under :data:`ROW_KEY`, what the
    ``TaskResult`` row needs besides it; built at once for a final state, and
    for a held STARTED only if it is shipped (most never are).
    """

    task_id: str
    status: str
    started: datetime | None
    build: Callable[[], dict[str, Any]] | None = None
    payload: dict[str, Any] | None = None

    def get_payload(self) -> dict[str, Any]:
        if self.payload is None:
            assert self.build is not None
            self.payload = self.build()
        return self.payload


class WriteBehindBackend(DatabaseBackend):
    """Results to Redis at once, to django-celery-results' table in batches (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._client_pid: int | None = None
        self._shipper: Shipper | None = None

    # -- Redis ---------------------------------------------------------------

    def redis(self) -> Any:
        """This process's Redis client (a forked child makes its own)."""
        if self._client is None or self._client_pid != os.getpid():
            import redis

            self._client = redis.Redis.from_url(redis_url(self.app))
            self._client_pid = os.getpid()
        return self._client

    def meta_key(self, task_id: str) -> str:
        return f"{conf.get()['RESULTS']['KEY_PREFIX']}meta:{task_id}"

    def pending_key(self) -> str:
        return f"{conf.get()['RESULTS']['KEY_PREFIX']}pending"

    def ship(self, items: Sequence[State]) -> None:
        """Store states in Redis, for readers and for the flusher: one round trip, one encoding each."""
        ttl = int(conf.get()["RESULTS"]["TTL"])
        pending = self.pending_key()
        pipe = self.redis().pipeline(transaction=False)
        for item in items:
            encoded = self.encode(item.get_payload())
            pipe.set(self.meta_key(item.task_id), encoded, ex=ttl)
            pipe.rpush(pending, encoded)
        pipe.execute()

    # -- storing -------------------------------------------------------------

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        now = timezone.now()
        started = now if status == states.STARTED else None

        def build() -> dict[str, Any]:
            return self.payload(task_id, result, status, traceback, request, now, started)

        state = State(task_id, status, started)
        if status == states.STARTED:
            state.build = build  # most STARTEDs are replaced before they are shipped
        else:
            state.payload = build()  # the request is gone by the time it is shipped
        self.shipper().submit(state)
        return result

    def payload(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None,
        request: Any,
        stored_at: datetime,
        started: datetime | None,
    ) -> dict[str, Any]:
        """Celery's meta of one state, plus the row's own fields under :data:`ROW_KEY`."""
        payload = self._get_result_meta(result=result, state=status, traceback=traceback, request=request)
        payload["task_id"] = task_id
        extended = self._get_extended_properties(request, traceback)
        payload[ROW_KEY] = {
            "task_args": extended["task_args"],
            "task_kwargs": extended["task_kwargs"],
            "periodic_task_name": extended["periodic_task_name"],
            "task_name": extended["task_name"],
            "worker": extended["worker"],
            "meta": {**(self._get_meta_from_request(request) or {}), **self._delivery_meta(request)},
            "date_done": stored_at.isoformat(),
            "date_started": started.isoformat() if started else None,
        }
        return payload

    def row(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The ``TaskResult`` row of a shipped payload, as the direct backend would have stored it."""
        extra = payload[ROW_KEY]
        content_type, content_encoding, result = self.encode_content(payload["result"])
        stored_at = datetime.fromisoformat(extra["date_done"])
        return {
            "task_id": payload["task_id"],
            "status": payload["status"],
            "result": result,
            "traceback": payload.get("traceback"),
            "meta": self.encode_content({**extra["meta"], "children": payload.get("children")})[2],
            "content_type": content_type,
            "content_encoding": content_encoding,
            "periodic_task_name": extra["periodic_task_name"],
            "task_name": extra["task_name"],
            "task_args": extra["task_args"],
            "task_kwargs": extra["task_kwargs"],
            "worker": extra["worker"],
            "date_created": stored_at,
            "date_done": stored_at,
            "date_started": datetime.fromisoformat(extra["date_started"]) if extra["date_started"] else None,
        }

    def shipper(self) -> Shipper:
        """This process's :class:`Shipper` (a forked child makes its own)."""
        if self._shipper is None or self._shipper.pid != os.getpid():
            self._shipper = Shipper(self.ship, float(conf.get()["RESULTS"]["STARTED_DELAY"]))
            _shippers.append(self._shipper)
        return self._shipper

    def flush(self, timeout: float = 30) -> bool:
        """Wait until this process's stored states are in Redis."""
        return self._shipper is None or self._shipper.pid != os.getpid() or self._shipper.flush(timeout)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        # The counter's last decrement checks that every header result is
        # ready, this task's own included: it must be in Redis first.
        self.flush()
        super().on_chord_part_return(request, state, result, **kwargs)

    # -- reading -------------------------------------------------------------

    def _get_task_meta_for(self, task_id: str) -> Any:
        if self._shipper is not None and self._shipper.pid == os.getpid() and self._shipper.pending():
            self._shipper.flush()  # read what this very process stored
        raw = self.redis().get(self.meta_key(task_id))
        if raw is None:
            return super()._get_task_meta_for(task_id)
        meta = self.decode(raw)
        meta.pop(ROW_KEY, None)
        return self.meta_from_decoded(meta)

    def _forget(self, task_id: str) -> None:
        self.redis().delete(self.meta_key(task_id))
        super()._forget(task_id)


def _built(state: State) -> bool:
    try:
        state.get_payload()
    except Exception:  # noqa: BLE001 - one bad state must not stop the others
        logger.exception("could not build the %s state of task %s", state.status, state.task_id)
        return False
    return True


class Shipper:
    """Ships this process's states to Redis from a thread, in the order they were stored.

    The task's own thread only queues its state (microseconds) and goes on to
    acknowledge the message and take the next one; the Redis round trip, which
    under load was most of the time a worker process spent per task, happens
    beside it, and states stored meanwhile go in the same pipeline. The
    window in which a killed process loses a state is the time from queueing
    to Redis' reply (docs/results.md has it measured); :meth:`flush` closes it
    where it matters: before a chord counts a header task, before this process
    reads a result, and when the process exits.

    A STARTED state is held for ``delay`` seconds first: the task's final
    state replaces it if it comes sooner (keeping its ``date_started``).
    """

    def __init__(self, ship: Any, delay: float) -> None:
        self.pid = os.getpid()
        self.delay = delay
        self._ship = ship
        self._cond = threading.Condition()
        self._queue: list[State] = []
        self._held: dict[str, tuple[float, State]] = {}
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, state: State) -> None:
        """Queue a state; a STARTED is held for ``delay``, a later state folds a held STARTED in."""
        with self._cond:
            if state.status == states.STARTED and self.delay > 0:
                self._held[state.task_id] = (time.monotonic() + self.delay, state)
            else:
                held = self._held.pop(state.task_id, None)
                if held is not None and held[1].started is not None and state.payload is not None:
                    # Never shipped: this state's row gets the start time instead.
                    state.payload[ROW_KEY]["date_started"] = held[1].started.isoformat()
                self._queue.append(state)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="taskdeck-results-ship", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> bool:
        return bool(self._queue or self._busy)

    def flush(self, timeout: float = 30) -> bool:
        """Wait until every queued state (not the held STARTEDs) is in Redis; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                items = self._take()
                while not items:
                    self._cond.wait(self._next_due())
                    items = self._take()
                self._busy = True
                # A held STARTED is built here, under the lock, while its task
                # still runs: the task's final state waits for the lock.
                items = [item for item in items if _built(item)]
            try:
                self._ship_until_done(items)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[State]:
        """Everything queued, plus the held STARTEDs now due; call with the lock held."""
        now = time.monotonic()
        due = [task_id for task_id, (at, _) in self._held.items() if at <= now]
        items = [self._held.pop(task_id)[1] for task_id in due] + self._queue
        self._queue = []
        return items

    def _next_due(self) -> float | None:
        if not self._held:
            return None
        return max(0.0, min(at for at, _ in self._held.values()) - time.monotonic())

    def _ship_until_done(self, items: list[State]) -> None:
        delay = 0.05
        while True:
            try:
                self._ship(items)
                return
            except Exception:  # noqa: BLE001 - Redis unreachable: keep the states and retry
                logger.exception("could not store %d result state(s) in Redis; retrying", len(items))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
