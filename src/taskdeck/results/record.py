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

# Store a state unless it is not ready (ARGV[3] == '0') and the task's stored
# state is SUCCESS, as the upsert does. KEYS[1] meta, KEYS[2] stream; ARGV[1]
# the record, ARGV[2] the TTL.
_SHIP = """
if ARGV[3] == '0' then
  local current = redis.call('GET', KEYS[1])
  if current and cjson.decode(current)['status'] == 'SUCCESS' then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[1])
return 1
"""


def stream_key() -> str:
    """The stream of records: ``<RESULTS["KEY_PREFIX"]>records``."""
    return f"{conf.get()['RESULTS']['KEY_PREFIX']}records"


class RecordBackend(WriteBehindBackend):
    """Results and monitor facts in one Redis stream (see the module docstring)."""

    uses_flusher = False

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
                return self._ship_once(row)
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

    def _ship_once(self, row: dict[str, Any]) -> None:
        ready = "1" if row["status"] in upsert.READY else "0"
        self.script(_SHIP)(
            [self.meta_key(row["task_id"]), stream_key()], [encode_row(row), self.ttl(), ready]
        )

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
        if isinstance(sent, int | float) and not isinstance(sent, bool):
            run["sent"] = float(sent)
        for name, attr in (("parent_id", "parent_id"), ("root_id", "root_id"), ("group_id", "group")):
            value = getattr(request, attr, None)
            if isinstance(value, str) and value:
                run[name] = value
        delivery = getattr(request, "delivery_info", None)
        priority = delivery.get("priority") if isinstance(delivery, dict) else None
        if isinstance(priority, int) and not isinstance(priority, bool):
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
