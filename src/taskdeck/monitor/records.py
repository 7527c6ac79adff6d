"""Task run records from the workers' Redis stream (:mod:`taskdeck.results.record`), through a consumer group.

:class:`RecordSource` reads the stream ``<RESULTS["KEY_PREFIX"]>records`` as
one consumer of the group ``taskdeck`` (``XREADGROUP``): several recorders
share the stream, each entry is given to one of them, and an entry stays
pending in the group until the recorder that read it acknowledges it —
after its batch is committed (``XACK``, then ``XDEL``: the stream keeps only
what is not written yet). A recorder that restarts under the same consumer
name reads its own pending entries first; the entries of a consumer that
stopped for good are claimed by another after ``MONITOR["RECORD_CLAIM_AFTER"]``
seconds (``XAUTOCLAIM``). The group is created at the stream's first entry (id
``0``), so records written before any recorder ran are read too.

:func:`facts` turns one record into the :class:`~taskdeck.monitor.merge.RunFact`
list an event stream would have given (sent, started, the final state), so
runs and rollups are written by the recorder's own code; :func:`result_row`
is the record's ``TaskResult`` row.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskdeck import conf
from taskdeck.monitor import attempts
from taskdeck.monitor.merge import FINAL, FLAGGED, RANK, RunFact, clip
from taskdeck.results.record import FIELD, RUN
from taskdeck.results.writebehind import DATETIMES, FORGET, decode_row

logger = logging.getLogger("taskdeck.monitor")

GROUP = "taskdeck"


@dataclass
class Record:
    """One stream entry: its id, its raw field, and the row it decodes to (None: it does not)."""

    entry_id: bytes
    raw: bytes
    row: dict[str, Any] | None
    error: str = ""

    @property
    def timestamp(self) -> float:
        """When the entry was added (the stream id's milliseconds)."""
        return int(self.entry_id.split(b"-")[0]) / 1000


#: The ``TaskResult`` columns a record carries as text (the dates are parsed by ``decode_row``).
TEXT_FIELDS = frozenset({
    "task_id", "periodic_task_name", "task_name", "task_args", "task_kwargs", "status", "worker",
    "content_type", "content_encoding", "result", "traceback", "meta",
})  # fmt: skip
FIELDS = TEXT_FIELDS | set(DATETIMES) | {RUN, FORGET}


def decode(entry_id: bytes, fields: dict[bytes, bytes]) -> Record:
    """One stream entry as a :class:`Record`; one that is not a record the recorder can write has an error.

    Each field must be one the record backend writes, text fields text (a number is taken as its
    text): a ``task_name`` that was a JSON object reached the database, which refused the batch
    with an error the recorder took for an outage, and retried forever.
    """
    raw = fields.get(FIELD.encode()) or b""
    try:
        row = decode_row(raw)
        if not isinstance(row, dict) or not row.get("task_id"):
            return Record(entry_id, raw, None, "no task id")
        for key, value in row.items():
            if key not in FIELDS:
                return Record(entry_id, raw, None, f"unknown field {key!r}")
            if key in TEXT_FIELDS and value is not None and not isinstance(value, str):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    return Record(
                        entry_id, raw, None, f"field {key!r} must be text or null, got {type(value).__name__}"
                    )
                row[key] = str(value)
        if len(row["task_id"]) > 255:
            return Record(entry_id, raw, None, "task id over 255 characters")
        return Record(entry_id, raw, row)
    except Exception as exc:  # noqa: BLE001 - written by another version, or by hand
        return Record(entry_id, raw, None, f"{type(exc).__name__}: {exc}")


class RecordSource:
    """One consumer of the record stream's group (see the module docstring)."""

    def __init__(self, client: Any, stream: str, consumer: str, claim_idle: float | None = None) -> None:
        self.client = client
        self.stream = stream
        self.consumer = consumer
        #: Seconds an entry stays pending with a consumer before another one claims it.
        self.claim_idle = float(conf.monitor()["RECORD_CLAIM_AFTER"] if claim_idle is None else claim_idle)
        self._own_pending = True  # read what this consumer name left unacknowledged, first
        self._claim_from = b"0-0"
        self._group_made = False

    @classmethod
    def for_app(cls, app: Any, name: str) -> RecordSource | None:
        """The source of ``app``'s records, or None when its result backend writes none."""
        from taskdeck.results.record import RecordBackend, stream_key

        if not isinstance(app.backend, RecordBackend):
            return None
        return cls(app.backend.redis(), stream_key(), f"{name}@{socket.gethostname()}")

    def ensure_group(self) -> None:
        if self._group_made:
            return
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_made = True

    def read(self, count: int, block: float) -> list[Record]:
        """Up to ``count`` records, waiting at most ``block`` seconds for the first new one."""
        try:
            return self._read(count, block)
        except Exception as exc:
            if "NOGROUP" in str(exc):  # a Redis restarted without its data: made again next time
                self._group_made = False
            # After an outage, what this consumer read and could not acknowledge comes first.
            self._own_pending = True
            raise

    def _read(self, count: int, block: float) -> list[Record]:
        self.ensure_group()
        if self._own_pending:
            got = self.client.xreadgroup(GROUP, self.consumer, {self.stream: "0"}, count=count)
            entries = got[0][1] if got else []
            if entries:
                return [decode(i, f) for i, f in entries if f is not None]
            self._own_pending = False
        got = self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=count, block=max(1, int(block * 1000))
        )
        return [decode(i, f) for i, f in got[0][1]] if got else []

    def claim(self, count: int) -> list[Record]:
        """Entries another consumer read and left unacknowledged for ``claim_idle`` seconds, now ours."""
        self.ensure_group()
        start, entries, *_ = self.client.xautoclaim(
            self.stream, GROUP, self.consumer, int(self.claim_idle * 1000), self._claim_from, count=count
        )
        self._claim_from = start if entries else b"0-0"
        return [decode(i, f) for i, f in entries if f is not None]

    def ack(self, records: list[Record]) -> None:
        """Written: out of the group's pending list and out of the stream."""
        if not records:
            return
        ids = [r.entry_id for r in records]
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()

    def backlog(self) -> int:
        """Entries in the stream: not yet written, or read and not yet acknowledged."""
        return int(self.client.xlen(self.stream))


def result_row(row: dict[str, Any]) -> dict[str, Any]:
    """The record's ``TaskResult`` row (the monitor's part left out)."""
    return {k: v for k, v in row.items() if k != RUN}


def write_results(rows: list[dict[str, Any]], using: str | None = None) -> None:
    """The ``TaskResult`` rows of a batch of records, in stream order: the write-behind flusher's
    fold (one row per task, the upsert's rules), its ``forget()`` markers, one upsert."""
    from django_celery_results.models import TaskResult

    from taskdeck.results import upsert
    from taskdeck.results.flusher import fold, forget

    # In order: two recorders write batches of one stream in whichever order they commit.
    upsert.upsert(TaskResult, forget(TaskResult, fold(result_row(row) for row in rows)), using, in_order=True)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else round(value.timestamp(), 6)


def _text(encoded: Any) -> str:
    """A JSON-encoded repr (``task_args``) as the text an event carries."""
    if not isinstance(encoded, str) or not encoded:
        return ""
    try:
        value = json.loads(encoded)
    except ValueError:
        return encoded
    return value if isinstance(value, str) else repr(value)


def _start(task_id: str, at: float, worker: str, count: int | None, **fact: Any) -> list[RunFact]:
    """An attempt's start: its ``started_ts`` and mark; its retry ``count`` as task-received gives it."""
    out = [
        RunFact(
            task_id, "STARTED", at, column="started_ts", mark=attempts.mark("started", at, worker), **fact
        )
    ]
    if count is not None:
        out.append(RunFact(task_id, "STARTED", at, mark=attempts.mark("received", at, worker, retries=count)))
    return out


def _result_repr(row: dict[str, Any]) -> str:
    """The result's repr, or the exception's (``ValueError('boom')``), as the event would carry it."""
    if row.get("content_type") != "application/json" or not row.get("result"):
        return str(row.get("result") or "")
    try:
        value = json.loads(row["result"])
    except ValueError:
        return str(row["result"])
    if isinstance(value, dict) and isinstance(value.get("exc_type"), str):
        message = value.get("exc_message")
        args = message if isinstance(message, list) else [message]
        return f"{value['exc_type']}({', '.join(repr(a) for a in args)})"
    return repr(value)


def _own(row: dict[str, Any]) -> dict[str, Any]:
    """taskdeck's own meta of the row (queue, retries)."""
    from taskdeck.results.backend import META_KEY

    try:
        meta = json.loads(row.get("meta") or "{}")
    except ValueError:
        return {}
    own = meta.get(META_KEY) if isinstance(meta, dict) else None
    return own if isinstance(own, dict) else {}


def facts(row: dict[str, Any], repr_limit: int = 1024, tb_limit: int = 16384) -> list[RunFact]:
    """The facts of one record, as the task events of that state would have given them."""
    status = row.get("status")
    if row.get(FORGET) or status not in RANK or status in FLAGGED:
        # A forget marker, or a custom state (no event carries those either; LOST and
        # STUCK are the recorder's own, never a task's).
        return []
    task_id = str(row["task_id"])
    extra = row.get(RUN)
    run: dict[str, Any] = extra if isinstance(extra, dict) else {}
    own = _own(row)
    queue = own.get("queue") if isinstance(own.get("queue"), str) else None
    identity = {
        "name": row.get("task_name") or "",
        "args": clip(_text(row.get("task_args")), repr_limit),
        "kwargs": clip(_text(row.get("task_kwargs")), repr_limit),
        "queue": queue,
        "routing_key": queue,
        "parent_id": run.get("parent_id") if run.get("parent_id") != task_id else None,
        "root_id": run.get("root_id"),
        "group_id": run.get("group_id"),
    }
    identity = {k: v for k, v in identity.items() if v}
    retries = own.get("retries") if isinstance(own.get("retries"), int) else None
    priority = run.get("priority") if isinstance(run.get("priority"), int) else None
    worker = row.get("worker") or ""
    started = _ts(row.get("date_started"))
    done = _ts(row.get("date_done")) or started or 0.0
    out: list[RunFact] = []
    sent = run.get("sent")
    if isinstance(sent, int | float) and not isinstance(sent, bool):
        out.append(RunFact(task_id, "SENT", round(float(sent), 6), column="sent_ts", identity=identity))
    if started is not None and status != "STARTED":
        # The attempt's start, which a fast task's record alone says (its STARTED was held back):
        # the same marks a shipped STARTED record makes, so a run that has both keeps one of each.
        # Its retry count pairs the attempt with its end: a retry's next attempt can start before
        # the attempt before it stored its RETRY.
        out += _start(task_id, started, worker, retries, identity=identity)
    if status == "STARTED":
        out += _start(
            task_id,
            started or done,
            worker,
            retries,
            identity=identity,
            attempt={"worker": worker},
            retries=retries,
            priority=priority,
        )
        return out
    attempt: dict[str, Any] = {"worker": worker}
    if status == "SUCCESS":
        attempt["result"] = clip(_result_repr(row), repr_limit)
        if started is not None:
            attempt["runtime"] = round(max(done - started, 0.0), 6)
    elif status in FINAL or status == "RETRY":
        attempt["exception"] = clip(_result_repr(row), repr_limit)
        attempt["traceback"] = clip(row.get("traceback"), tb_limit)
    end = {"RETRY": "retried", "FAILURE": "failed", "SUCCESS": "succeeded", "REVOKED": "revoked"}.get(status)
    mark = None
    if end is not None:
        mark = attempts.mark(
            end,
            done,
            worker,
            attempt.get("exception", ""),
            attempt.get("runtime") if end == "succeeded" else None,
        )
    out.append(
        RunFact(
            task_id,
            status,
            done,
            identity=identity,
            attempt=attempt,
            retries=retries,
            priority=priority,
            mark=mark,
        )
    )
    return out
