"""The write-behind flusher: pending result rows from Redis to the database, in order, in batches.

A process beside each worker (forked by its main process on ``worker_ready``;
drained and stopped on ``worker_shutdown``, after the pool has finished its
tasks).
Several workers share one pending list; a lock in Redis lets one flusher
write at a time, so rows are applied in the order they were pushed — the
order a direct backend would have written them in — and a flusher that dies
leaves its lock to expire (``LOCK_TIMEOUT``) and another one takes over.

One batch:

1. read the first ``BATCH_SIZE`` rows (``LRANGE``; nothing is removed yet);
2. fold the states of each task into one row (the later state wins, unless
   the earlier one is SUCCESS and the later one is not ready; a field the
   later state leaves empty — ``date_started``, the extended fields — keeps
   the earlier value: the rules the upsert itself applies across batches); a
   ``forget()`` marker drops the task's states before it;
3. delete the rows of forgotten tasks, then upsert the rest in one statement
   (:mod:`taskdeck.results.upsert`);
4. remove exactly those rows (``LTRIM``), only if this flusher still holds
   the lock (one Lua script, atomic in Redis).

A crash between 3 and 4 writes the batch again next time: the upsert is
idempotent. Nothing is removed from Redis before it is committed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from billiard.context import Process

from taskdeck import conf, deadletter
from taskdeck.errors import is_database_outage
from taskdeck.results import upsert
from taskdeck.results.writebehind import FORGET, WriteBehindBackend, decode_row, encode_row, redis_url

logger = logging.getLogger("taskdeck.results")

#: Seconds a stopping worker waits for its flusher's last drain.
STOP_TIMEOUT = 60

# Take the lock, or extend it if we hold it. KEYS[1] lock; ARGV[1] owner, ARGV[2] ms.
_ACQUIRE = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Drop the first ARGV[2] rows if we still hold the lock. KEYS[1] lock, KEYS[2] pending.
_TRIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('LTRIM', KEYS[2], ARGV[2], -1)
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def fold(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task id, each the merge of that task's states in order, as the upsert merges them."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        before = merged.get(row["task_id"])
        if row.get(FORGET):
            merged[row["task_id"]] = {"task_id": row["task_id"], FORGET: True}
            continue
        if before is None:
            merged[row["task_id"]] = row
            continue
        if "status" not in before:  # forgotten, then stored again: delete, then upsert
            merged[row["task_id"]] = {**row, FORGET: True}
            continue
        if not upsert.replaces(before["status"], row["status"]):
            continue
        after = dict(row)
        if before.get(FORGET):
            after[FORGET] = True
        for name in upsert.KEEP_IF_NULL:
            if after.get(name) is None:
                after[name] = before.get(name)
        for name in upsert.INSERT_ONLY:
            after[name] = before.get(name, after.get(name))
        merged[row["task_id"]] = after
    return list(merged.values())


def forget(model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delete the rows of the tasks forgotten in a folded batch; the states left to upsert."""
    forgotten = [row["task_id"] for row in rows if row.get(FORGET)]
    if forgotten:
        model._default_manager.filter(task_id__in=forgotten).delete()
    return [row for row in rows if "status" in row]


class Flusher:
    """Moves pending rows to the database; :meth:`flush` does one batch."""

    def __init__(self, client: Any, settings: dict[str, Any], name: str | None = None) -> None:
        self.client = client
        self.prefix = settings["KEY_PREFIX"]
        self.batch_size = int(settings["BATCH_SIZE"])
        self.interval = float(settings["FLUSH_INTERVAL"])
        self.lock_ms = int(float(settings["LOCK_TIMEOUT"]) * 1000)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._acquire = client.register_script(_ACQUIRE)
        self._trim = client.register_script(_TRIM)
        self._release = client.register_script(_RELEASE)

    @property
    def pending_key(self) -> str:
        return f"{self.prefix}pending"

    @property
    def lock_key(self) -> str:
        return f"{self.prefix}flush-lock"

    def flush(self) -> int:
        """Write one batch; the number of rows written (0: nothing pending, or another flusher's turn)."""
        from django_celery_results.models import TaskResult

        if not self._acquire(keys=[self.lock_key], args=[self.name, self.lock_ms]):
            return 0
        raw = self.client.lrange(self.pending_key, 0, self.batch_size - 1)
        if not raw:
            return 0
        self.write(TaskResult, forget(TaskResult, fold(self._decoded(raw))))
        if not self._trim(keys=[self.lock_key, self.pending_key], args=[self.name, len(raw)]):
            # Our lock expired mid-batch and another flusher owns the list now:
            # it will write these rows again (idempotent); we must not trim.
            logger.warning("result flusher %s lost its lock during a batch", self.name)
            return 0
        return len(raw)

    def write(self, model: Any, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows``. A batch the database refuses (not an outage: that is raised) is
        split until the refused row stands alone; that row is dead-lettered, the others written."""
        try:
            upsert.upsert(model, rows)
        except Exception as exc:
            if is_database_outage(exc) or not rows:
                raise
            if len(rows) > 1:
                self.write(model, rows[: len(rows) // 2])
                self.write(model, rows[len(rows) // 2 :])
                return
            reason = f"the database refused this result row: {type(exc).__name__}: {exc}"
            logger.error("result flusher %s: %s; dead-lettered", self.name, reason)
            self._dead_letter(reason, encode_row(rows[0]), rows[0])

    def _decoded(self, raw: list[bytes]) -> Iterator[dict[str, Any]]:
        for item in raw:
            try:
                row = decode_row(item)
                if isinstance(row, dict) and row.get("task_id"):
                    yield row
                    continue
                error = "no task id"
            except Exception as exc:  # noqa: BLE001 - written by another version, or by hand
                error = f"{type(exc).__name__}: {exc}"
            self._dead_letter(f"pending result row does not decode: {error}", item, {})

    def _dead_letter(self, reason: str, body: bytes, row: dict[str, Any]) -> None:
        deadletter.store(
            "result",
            reason,
            source=f"result flusher {self.name}",
            body=body,
            task_id=str(row.get("task_id") or ""),
            task=str(row.get("task_name") or ""),
        )

    def drain(self) -> int:
        """Flush until nothing is pending (or another flusher holds the lock)."""
        total = 0
        while written := self.flush():
            total += written
        return total

    def release(self) -> None:
        self._release(keys=[self.lock_key], args=[self.name])


class FlusherProcess(Process):
    """A process of its own, forked by the worker's main process, that runs a :class:`Flusher`.

    Not a thread of the main process: that process dispatches every message
    to the pool and acknowledges it, and a flusher beside it (decoding rows,
    building the statement) took the interpreter from it — measured ~6% of
    throughput. Forked rather than started afresh, so it shares Django's
    set-up; it drops the database connections it inherited (without closing
    them: they are the parent's), and stops when told to (SIGTERM, after a
    last drain) or when its parent is gone.
    """

    def __init__(self, app: Any) -> None:
        super().__init__(name="taskdeck-results-flusher", daemon=True)
        self.app = app

    def run(self) -> None:
        parent = os.getppid()
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        # Ctrl-C reaches the whole process group: the worker shuts down first,
        # then stops us, so its last results are drained too.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        _forget_inherited_connections()
        import redis

        flusher = Flusher(redis.Redis.from_url(redis_url(self.app)), conf.results())
        logger.info("result flusher %s started", flusher.name)
        try:
            run_flusher(flusher, lambda: stopping.is_set() or os.getppid() != parent, stopping.wait)
        finally:
            flusher.release()


def run_flusher(flusher: Flusher, should_stop: Callable[[], bool], sleep: Callable[[float], Any]) -> None:
    """Flush until ``should_stop()``, then drain what is left."""
    from django.db import connections

    backoff = first_backoff = min(5.0, flusher.interval * 10)
    while not should_stop():
        try:
            written = flusher.flush()
        except Exception:  # noqa: BLE001 - database or Redis down: keep trying, lose nothing
            logger.exception("result flusher %s: batch failed, retrying in %.1fs", flusher.name, backoff)
            connections.close_all()
            sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        backoff = first_backoff
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()
        if written < flusher.batch_size:
            sleep(flusher.interval)
    try:
        flusher.drain()
    except Exception:  # noqa: BLE001 - left in Redis for the next flusher
        logger.exception("result flusher %s: could not drain at exit", flusher.name)


_inherited: list[Any] = []


def _forget_inherited_connections() -> None:
    """Let this forked process open its own database connections, leaving the parent's alone.

    The objects are kept referenced so no finalizer closes them here.
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _inherited.append(conn.connection)
            conn.connection = None


_processes: dict[int, FlusherProcess] = {}


def connect() -> None:
    """Run a flusher beside every worker whose result backend is the write-behind one."""
    from celery import signals

    signals.worker_ready.connect(_start, dispatch_uid="taskdeck.results.flusher.start", weak=False)
    signals.worker_shutdown.connect(_stop, dispatch_uid="taskdeck.results.flusher.stop", weak=False)


def _start(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or not isinstance(app.backend, WriteBehindBackend) or not app.backend.uses_flusher:
        return
    process = FlusherProcess(app)
    process.start()
    _processes[id(app)] = process


def _stop(sender: Any = None, **kwargs: Any) -> None:
    """After the pool finished its tasks: let the flusher drain, then wait for it."""
    process = _processes.pop(id(getattr(sender, "app", None)), None)
    if process is None or not process.is_alive():
        return
    os.kill(process.pid, signal.SIGTERM)
    process.join(STOP_TIMEOUT)
    if process.is_alive():
        logger.error("result flusher did not stop in %ss; rows left in Redis are kept", STOP_TIMEOUT)
        process.terminate()
