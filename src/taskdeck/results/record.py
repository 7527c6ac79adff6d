"""One record per task run: the result and the monitor's facts in one Redis write.

Use it in place of the direct backend::

    CELERY_RESULT_BACKEND = "taskdeck.results.record:RecordBackend"

Each stored state is the ``TaskResult`` row the direct backend would write
(:meth:`~taskdeck.results.backend.DatabaseBackend.result_row`), plus what the
monitor needs and the row has no column for (``"run"``: publish time, parent,
root and group ids, priority), encoded once as JSON and
sent by the task's own process, before its message is acknowledged, in one
script (one round trip):

- ``SET <prefix>meta:<task id>`` with a time to live: what ``AsyncResult`` reads,
  as with the write-behind backend (:mod:`taskdeck.results.writebehind`);
- ``XADD <prefix>records``: one entry of a Redis stream, which the recorder
  (``taskdeck monitor``) reads through a consumer group
  (:mod:`taskdeck.monitor.records`) and turns, in batches, into the
  ``TaskResult`` rows, the ``TaskRun`` rows and the rollups, in one
  transaction per batch.

So a worker with this backend needs no task events for the monitor
(``CELERY_WORKER_SEND_TASK_EVENTS`` can be off; heartbeats still go out), and
the facts of a run are written once instead of twice. The publish time comes
in the message's ``taskdeck_sent`` header (set by taskdeck's publisher), so a
run's wait time needs no ``task-sent`` event either.

Reads, groups, chords, ``forget()``, ``cleanup()`` and the held STARTED are
the write-behind backend's: a STARTED still running after
``RESULTS["STARTED_DELAY"]`` goes into the same stream. The rows reach the
table when the recorder runs; while it does not, the records wait in the
stream (nothing is trimmed before it is written) and results stay readable
from Redis.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from taskdeck import conf
from taskdeck.results import SENT_HEADER, upsert
from taskdeck.results.writebehind import FORGET, WriteBehindBackend, encode_row

#: The key of a record that holds the monitor's facts (not a ``TaskResult`` field).
RUN = "run"
logger = logging.getLogger("taskdeck.results")

#: Seconds a task's process keeps trying to store a record while Redis does not
#: answer (a restart), before the store fails as Celery's own would.
SHIP_RETRY_FOR = 30.0
#: The stream entry's one field.
FIELD = "r"

# Append the record; store its state for readers unless the task's stored one
# stays (upsert.LUA_KEPT, ARGV[3] its upsert.ship_flag), as the upsert does.
# A record whose state does not replace the stored one still goes to the
# stream: it holds its attempt's facts (a retry's RETRY stored after the next
# attempt's SUCCESS is that attempt's end), and the recorder applies the same
# rule to the rows. KEYS[1] meta, KEYS[2] stream; ARGV[1] the record, ARGV[2] the TTL.
_SHIP = (
    upsert.LUA_KEPT
    + """
redis.call('XADD', KEYS[2], '*', 'r', ARGV[1])
if ARGV[3] ~= '1' and kept(redis.call('GET', KEYS[1]), ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
)


def stream_key() -> str:
    """The stream of records: ``<RESULTS["KEY_PREFIX"]>records``."""
    return f"{conf.get()['RESULTS']['KEY_PREFIX']}records"


class RecordBackend(WriteBehindBackend):
    """Results and monitor facts in one Redis stream (see the module docstring)."""

    uses_flusher = False
    ship_script = _SHIP

    def ship_key(self) -> str:
        return stream_key()

    def ship(self, row: dict[str, Any]) -> None:
        """Store one state's record; while Redis does not answer, try again for ``SHIP_RETRY_FOR`` s.

        The task's message is acknowledged only after this returns: a Redis
        restarting (a broker restart, when the stream is in the broker's Redis)
        holds the task's process here instead of losing its record (measured in
        tests/faults/test_records.py: without it one record was lost per crash).
        A record sent twice (Redis ran the script, the reply was lost) is
        written once: the consumer's writes are idempotent.
        """
        import redis

        delay, deadline = 0.1, time.monotonic() + SHIP_RETRY_FOR
        while True:
            try:
                return super().ship(row)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning(
                    "task %s: Redis did not take its %s record (%s); trying again in %.1fs",
                    row.get("task_id"),
                    row.get("status"),
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _row(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None,
        request: Any,
        now: datetime,
        started_at: datetime | None,
    ) -> dict[str, Any]:
        row = super()._row(task_id, result, status, traceback, request, now, started_at)
        run = self._run_facts(request)
        if run:
            row[RUN] = run
        return row

    @staticmethod
    def _run_facts(request: Any) -> dict[str, Any]:
        """What the monitor needs of ``request`` that the row has no column for (empty ones left out)."""
        if request is None:
            return {}
        run: dict[str, Any] = {}
        sent = getattr(request, SENT_HEADER, None)
        if sent is None:
            headers = getattr(request, "headers", None)
            sent = headers.get(SENT_HEADER) if isinstance(headers, dict) else None
        # A header anyone can set: NaN or 1e308 made the recorder refuse the whole record, result
        # row and all. Kept only as a time a run can have been sent at (to the year 2286).
        if isinstance(sent, int | float) and not isinstance(sent, bool) and 0 < sent < 1e10:
            run["sent"] = float(sent)
        for name, attr in (("parent_id", "parent_id"), ("root_id", "root_id"), ("group_id", "group")):
            value = getattr(request, attr, None)
            if isinstance(value, str) and value:
                run[name] = value
        delivery = getattr(request, "delivery_info", None)
        priority = delivery.get("priority") if isinstance(delivery, dict) else None
        if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 255:
            run["priority"] = priority
        return run

    def _forget(self, task_id: str) -> None:
        def forget() -> None:
            pipe = self.redis().pipeline(transaction=True)
            pipe.delete(self.meta_key(task_id))
            pipe.xadd(stream_key(), {FIELD: encode_row({"task_id": task_id, FORGET: True})})
            pipe.execute()

        self.after_commit(forget)
        # The database's row, as django-celery-results forgets it (not the write-behind's pending list).
        super(WriteBehindBackend, self)._forget(task_id)


def oldest_record_age(client: Any) -> tuple[int, float]:
    """How many records wait in the stream, and how long the oldest has waited (s; Redis' clock).

    ``XLEN``, ``XRANGE … COUNT 1`` and ``TIME`` in one round trip.
    """
    pipe = client.pipeline(transaction=False)
    pipe.xlen(stream_key())
    pipe.xrange(stream_key(), "-", "+", count=1)
    pipe.time()
    waiting, first, (seconds, micros) = pipe.execute()
    if not first:
        return int(waiting), 0.0
    entry_id = first[0][0]
    ms = int((entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)).split("-", 1)[0])
    return int(waiting), max(0.0, seconds + micros / 1e6 - ms / 1000)


class RecorderWatch:
    """Warn in a worker's log while its records wait for a recorder longer than ``RECORDER_STALE_AFTER``.

    With the record backend a run's result row reaches the table only when a
    recorder (``taskdeck monitor``) reads its record. A worker started
    without one, or whose recorder has died, stores every result in Redis
    (``AsyncResult`` reads it) and nothing in the database: this says so in
    the worker's own log, once when records start to wait too long and once
    when a recorder reads them again. A thread of the worker's main process
    looks every ``RECORDER_STALE_AFTER`` seconds: one Redis round trip
    (:func:`oldest_record_age`), no database.
    """

    def __init__(self, app: Any) -> None:
        import threading

        self.app = app
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="taskdeck-recorder-watch", daemon=True)

    def run(self) -> None:
        import redis

        from taskdeck.results.writebehind import redis_url

        interval = float(conf.monitor()["RECORDER_STALE_AFTER"])
        client = redis.Redis.from_url(redis_url(self.app))
        warned = False
        while not self.stop.wait(interval):
            try:
                waiting, age = oldest_record_age(client)
            except redis.RedisError as exc:
                logger.debug("the records stream cannot be read (%s): looking again in %.0fs", exc, interval)
                continue
            if age > interval and not warned:
                logger.warning(
                    "no recorder has read the task records for %.0fs (%d waiting in Redis, %s): their "
                    "results and runs reach the database only when one does. Run `taskdeck monitor` "
                    "(`taskdeck up` runs one); AsyncResult reads the results from Redis meanwhile.",
                    age,
                    waiting,
                    stream_key(),
                )
                warned = True
            elif age <= interval and warned:
                logger.info("a recorder reads the task records again (%d waiting)", waiting)
                warned = False


_watches: dict[int, RecorderWatch] = {}


def connect() -> None:
    """Watch the records of every worker whose result backend is the record one."""
    from celery import signals

    signals.worker_ready.connect(_start_watch, dispatch_uid="taskdeck.results.record.watch", weak=False)
    signals.worker_shutdown.connect(_stop_watch, dispatch_uid="taskdeck.results.record.unwatch", weak=False)


def _start_watch(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    if (
        app is None
        or not isinstance(app.backend, RecordBackend)
        or not conf.monitor()["RECORDER_STALE_AFTER"]
    ):
        return
    watch = RecorderWatch(app)
    watch.thread.start()
    _watches[id(app)] = watch


def _stop_watch(sender: Any = None, **kwargs: Any) -> None:
    for watch in _watches.values():
        watch.stop.set()
    _watches.clear()
