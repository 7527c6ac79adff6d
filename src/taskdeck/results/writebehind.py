"""Write-behind: results in Redis at once, in django-celery-results' table in batches.

Use it in place of the direct backend::

    CELERY_RESULT_BACKEND = "taskdeck.results.writebehind:WriteBehindBackend"

A stored state is the ``TaskResult`` row the direct backend would write
(:meth:`~taskdeck.results.backend.DatabaseBackend.result_row`), encoded once
as JSON and sent to Redis — the broker's, or ``TASKDECK["RESULTS"]["REDIS_URL"]``
— by the task's own process before its message is acknowledged:

- ``SET <prefix>meta:<task id>`` with a time to live (``TTL``): what
  ``AsyncResult`` reads;
- ``RPUSH <prefix>pending``: what :mod:`taskdeck.results.flusher` moves into
  the table, in batches, one upsert statement per batch, in push order;

both in one script, which ignores a state that is not ready stored after
SUCCESS, as the upsert does (:mod:`taskdeck.results.upsert` says why).

A state stored inside the caller's ``transaction.atomic()`` (a view, a task
that stores its progress in a transaction of its own) is sent to Redis when
that transaction commits (``transaction.on_commit``), and never if it rolls
back — as the direct backend's row is rolled back with it. A test case's own
transaction (Django's ``TestCase``) is not the caller's: there it is sent at
once. ``forget()`` deletes the Redis copy and pushes a marker onto the
pending list, so the flusher drops what was pending for that task before it
(and deletes the row again if a batch read before the marker wrote it).
``cleanup()`` deletes the Redis copies of the rows it deletes, and no copy
lives longer than ``result_expires`` (the TTL is the smaller of the two), so
Redis never answers for a result the table no longer has.

So a worker never waits for the database's commit, and a killed worker
loses nothing it stored: the row is in Redis before the message is
acknowledged, and the pending list outlives every worker (docs/results.md:
what a crash can lose is what Redis itself can lose).

Reads (``AsyncResult.get()``, ``.state``, group joins, the chord counter's
readiness check) look in Redis first and fall back to the database, so a
result is visible before its row is written and after its Redis copy
expired. Groups (``GroupResult.save()``) and chords (the ``ChordCounter``
row) are written to the database directly, as ``django-db`` does; a chord
header task's state is in Redis before the counter is decremented. STARTED
is held back as by the direct backend (:mod:`taskdeck.results.started`).
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import states
from celery.utils.serialization import b64decode
from django.db import connections, router, transaction
from django.utils import timezone
from kombu.exceptions import DecodeError

from taskdeck import conf
from taskdeck.errors import ConfigurationError
from taskdeck.results import started, upsert
from taskdeck.results.backend import DatabaseBackend
from taskdeck.results.waiting import FINAL_STATES

#: Row fields that are datetimes (ISO 8601 strings in Redis).
DATETIMES = ("date_created", "date_started", "date_done")
#: Task ids per Redis DEL in ``cleanup()``.
CLEANUP_CHUNK = 1000

#: A pending entry that is not a row: ``forget()`` of the task named.
FORGET = "forget"

# Store a state unless the task's stored one stays (upsert.LUA_KEPT, ARGV[3]
# its upsert.ship_flag), as in the upsert. KEYS[1] meta, KEYS[2] pending;
# ARGV[1] the row, ARGV[2] the TTL.
_SHIP = (
    upsert.LUA_KEPT
    + """
if ARGV[3] ~= '1' and kept(redis.call('GET', KEYS[1]), ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""
)


def redis_url(app: Any) -> str:
    """``TASKDECK["RESULTS"]["REDIS_URL"]``, else the broker's URL when the broker is Redis."""
    from taskdeck import brokers
    from taskdeck.brokers.redis import client_url

    url = conf.get()["RESULTS"]["REDIS_URL"]
    if url:
        return str(url)
    broker = app.conf.broker_url or ""
    if not brokers.is_plain_redis(broker):
        raise ConfigurationError(
            f"the write-behind result backend keeps results in Redis, and the broker {broker!r} is "
            "not a Redis URL it can use: set TASKDECK['RESULTS']['REDIS_URL'] to a redis:// URL, "
            "or use taskdeck.results.backend:DatabaseBackend."
        )
    return client_url(broker)


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_row(row: dict[str, Any]) -> bytes:
    """The row as JSON, datetimes as ISO 8601 strings (the encoder calls ``_isoformat`` for those only)."""
    return json.dumps(row, separators=(",", ":"), default=_isoformat).encode()


def _bulk(value: bytes | str | int) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Script:
    """A Lua script run with ``EVALSHA`` on a connection of its own, in one round trip.

    What redis-py's ``Script`` does per call, less its machinery (a
    connection taken from the pool and given back, the retry wrapper, each
    argument encoded through the client's encoder), which was half the CPU of
    storing a state in a pool process (docs/benchmarks.md): the command is
    packed here and sent and read on one connection this object keeps. A
    server that does not have the script (restarted, ``SCRIPT FLUSH``) is sent
    ``EVAL`` with its source, which caches it again. A connection error leaves
    the connection closed (redis-py closes it) and is raised; the next call
    connects again. While another thread of the process runs it (a thread
    pool), a call goes through the client's own connection pool instead.
    """

    def __init__(self, client: Any, source: str) -> None:
        self.client = client
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()  # noqa: S324 - Redis names scripts so
        self._connection: Any = None
        self._lock = threading.Lock()

    def __call__(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        if not self._lock.acquire(blocking=False):
            from redis.exceptions import NoScriptError

            try:
                return self.client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                return self.client.eval(self.source, len(keys), *keys, *args)
        try:
            if self._connection is None:
                self._connection = self.client.connection_pool.get_connection()
            return self._run(keys, args)
        finally:
            self._lock.release()

    def _run(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        from redis.exceptions import NoScriptError

        tail = b"".join([_bulk(len(keys)), *map(_bulk, keys), *map(_bulk, args)])
        count = b"*%d\r\n" % (2 + len(keys) + 1 + len(args))
        try:
            return self._roundtrip(count + b"$7\r\nEVALSHA\r\n" + _bulk(self.sha) + tail)
        except NoScriptError:
            return self._roundtrip(count + b"$4\r\nEVAL\r\n" + _bulk(self.source) + tail)

    def _roundtrip(self, command: bytes) -> Any:
        from redis.exceptions import ResponseError

        connection = self._connection
        try:
            connection.send_packed_command([command], check_health=False)
            return connection.read_response()
        except ResponseError:
            raise  # a reply: the connection is in step
        except BaseException:
            connection.disconnect()  # out of step with the server: a new one next time
            raise


def decode_row(raw: bytes | str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(raw)
    for name in DATETIMES:
        if row.get(name):
            row[name] = datetime.fromisoformat(row[name])
    return row


class WriteBehindBackend(DatabaseBackend):
    """Results to Redis at once, to django-celery-results' table in batches (see the module docstring)."""

    #: Whether workers run a :mod:`~taskdeck.results.flusher` beside them for this backend.
    uses_flusher = True
    #: The script that stores a state: the meta key, then :meth:`ship_key`.
    ship_script = _SHIP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._client_pid: int | None = None
        self._ship: Any = None

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

    def script(self, source: str) -> Script:
        """This process's :class:`Script` of ``source`` (one per backend: the one it ships with)."""
        if self._ship is None or self._client_pid != os.getpid():
            self._ship = Script(self.redis(), source)
        return self._ship

    def ship_key(self) -> str:
        """Where :attr:`ship_script` puts each state besides the meta key: the flusher's pending list."""
        return self.pending_key()

    def ship(self, row: dict[str, Any]) -> None:
        """Store one state's row in Redis, for readers and for the flusher: one round trip."""
        self.script(self.ship_script)(
            [self.meta_key(row["task_id"]), self.ship_key()],
            [encode_row(row), self.ttl(), upsert.ship_flag(row["status"])],
        )

    def ttl(self) -> int:
        """Seconds a result stays in Redis: ``RESULTS["TTL"]``, at most ``result_expires``."""
        ttl = float(conf.get()["RESULTS"]["TTL"])
        if self.expires:
            ttl = min(ttl, float(self.expires))
        return max(1, int(ttl))

    def after_commit(self, send: Callable[[], Any]) -> None:
        """``send()`` now, or when the caller's transaction commits (never if it rolls back)."""
        conn = connections[router.db_for_write(self.TaskModel)]
        if conn.in_atomic_block and not all(getattr(b, "_from_testcase", False) for b in conn.atomic_blocks):
            transaction.on_commit(send, using=conn.alias)
        else:
            send()

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
        held = started.states()
        if status == states.STARTED:
            delay = float(conf.get()["RESULTS"]["STARTED_DELAY"])

            def write() -> None:
                self.ship(self._row(task_id, result, status, traceback, request, now, now))

            if delay > 0:
                held.hold(task_id, now, delay, write)
            else:
                self.after_commit(write)
            return result
        row = self._row(task_id, result, status, traceback, request, now, held.release(task_id))
        self.after_commit(lambda: self.ship(row))
        return result

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
        row = self.result_row(task_id, result, status, traceback, request)
        # Set here, not by the database: the row is written later.
        row["date_done"] = now
        row["date_created"] = started_at or now
        row["date_started"] = started_at
        return row

    def stored_row(self, task_id: str) -> dict[str, Any] | None:
        """The newest state's row as shipped (``TaskResult`` fields and more); None once gone from Redis."""
        raw = self.redis().get(self.meta_key(task_id))
        return None if raw is None else decode_row(raw)

    def _get_task_meta_for(self, task_id: str) -> Any:
        raw = self.redis().get(self.meta_key(task_id))
        if raw is None:
            return super()._get_task_meta_for(task_id)
        return self.meta_from_row(decode_row(raw))

    def final_metas(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The meta of each of ``task_ids`` whose state is final: Redis first, then the table."""
        metas, missing = {}, []
        for task_id, raw in zip(
            task_ids, self.redis().mget([self.meta_key(t) for t in task_ids]), strict=True
        ):
            if raw is None:
                missing.append(task_id)
                continue
            meta = self.meta_from_row(decode_row(raw))
            if meta["status"] in FINAL_STATES:
                metas[task_id] = meta
        if missing:
            metas.update(super().final_metas(missing))
        return metas

    def meta_from_row(self, row: dict[str, Any]) -> Any:
        """Celery's meta of a row, as django-celery-results builds it from a ``TaskResult``."""

        def decode(content: str | None) -> Any:
            if not content:
                return None
            return self.decode(b64decode(content) if row["content_encoding"] == "binary" else content)

        args, kwargs = row.get("task_args"), row.get("task_kwargs")
        with contextlib.suppress(DecodeError, binascii.Error):  # not JSON: kept as stored
            args, kwargs = decode(args), decode(kwargs)
        res = {
            "task_id": row["task_id"],
            "task_name": row.get("task_name"),
            "status": row["status"],
            "date_done": row.get("date_done"),
            "traceback": row.get("traceback"),
            "worker": row.get("worker"),
        }
        res.update(
            decode(row.get("meta")) or {},
            result=decode(row.get("result")),
            task_args=args,
            task_kwargs=kwargs,
            args=args,
            kwargs=kwargs,
        )
        return self.meta_from_decoded(res)

    def name_task(self, task_id: str, name: str) -> None:
        raw = self.redis().get(self.meta_key(task_id))
        if raw is None:
            return super().name_task(task_id, name)
        self.ship({**decode_row(raw), "task_name": name})

    def _forget(self, task_id: str) -> None:
        def forget() -> None:
            pipe = self.redis().pipeline(transaction=True)
            pipe.delete(self.meta_key(task_id))
            pipe.rpush(self.pending_key(), encode_row({"task_id": task_id, FORGET: True}))
            pipe.execute()

        self.after_commit(forget)
        super()._forget(task_id)

    def cleanup(self) -> None:
        """django-celery-results' cleanup, and the Redis copies of the rows it deletes."""
        if self.expires:
            expired = self.TaskModel._default_manager.get_all_expired(self.expires)
            ids = expired.values_list("task_id", flat=True).iterator(chunk_size=CLEANUP_CHUNK)
            while chunk := list(itertools.islice(ids, CLEANUP_CHUNK)):
                self.redis().delete(*(self.meta_key(task_id) for task_id in chunk))
        super().cleanup()
