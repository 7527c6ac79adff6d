"""Events checked before the recorder uses them: coerced, cut to their columns, or refused.

Anything can be published on Celery's event exchange. An event the recorder
cannot use (a timestamp that is not a number, a heartbeat whose ``active`` is
``"lots"``, a task event without a usable id) is *bad*: it is counted under a
reason (the field that was wrong), logged once per reason per minute, its
first example per minute kept in the dead-letter store, and skipped. A field
that can be read is coerced (``"1.5"`` → ``1.5``) and text is made to fit its
column: cut to the column's size, NUL characters and lone surrogates (which
PostgreSQL refuses) escaped.

The types and bounds are a pydantic schema per kind of event (task, worker,
any other): pydantic-core checks them at about the cost of the hand-written
checks it replaced (~5 µs an event), and names the field that was wrong.
Fields the schema does not know are passed on as they are.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Required

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from taskdeck.monitor.merge import clip

logger = logging.getLogger("taskdeck.monitor")

#: The largest timestamp a Python datetime holds (9999-12-31 23:59:59 UTC).
MAX_TIMESTAMP = 253402300799.0
#: Text columns of :class:`~taskdeck.models.TaskRun` and :class:`~taskdeck.models.Worker`
#: the event fields go to, and their size in characters.
COLUMN = 255

Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Count32 = Annotated[int, Field(ge=0, le=2**31 - 1)]
Count64 = Annotated[int, Field(ge=0, le=2**63 - 1)]
Load = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)]


class _Envelope(TypedDict, total=False):
    """What Celery's receiver reads of every event before the recorder sees it."""

    utcoffset: Annotated[float, Field(ge=-24, le=24, allow_inf_nan=False)] | None
    clock: Count64 | None


@with_config(ConfigDict(extra="allow"))
class TaskEvent(_Envelope, total=False):
    type: Required[str]
    uuid: Required[Annotated[str, Field(min_length=1, max_length=COLUMN)]]
    timestamp: Required[Timestamp]
    name: str | None
    queue: str | None
    routing_key: str | None
    parent_id: str | None
    root_id: str | None
    group_id: str | None
    hostname: str | None
    retries: Count32 | None
    priority: Int32 | None
    runtime: Seconds | None


@with_config(ConfigDict(extra="allow"))
class WorkerEvent(_Envelope, total=False):
    type: Required[str]
    hostname: Required[Annotated[str, Field(min_length=1)]]
    timestamp: Required[Timestamp]
    freq: Annotated[float, Field(gt=0, le=86400 * 365, allow_inf_nan=False)] | None
    active: Count32 | None
    processed: Count64 | None
    loadavg: Annotated[list[Load], Field(max_length=16)] | None
    sw_ident: str | None
    sw_ver: str | None


@with_config(ConfigDict(extra="allow"))
class OtherEvent(_Envelope, total=False):
    type: Required[str]
    timestamp: Timestamp | None


_TASK: TypeAdapter[Any] = TypeAdapter(TaskEvent)
_WORKER: TypeAdapter[Any] = TypeAdapter(WorkerEvent)
_OTHER: TypeAdapter[Any] = TypeAdapter(OtherEvent)
#: Text fields cut to :data:`COLUMN` characters.
_FIELDS = {*TaskEvent.__annotations__, *WorkerEvent.__annotations__}
_CUT = ("name", "queue", "routing_key", "parent_id", "root_id", "group_id", "hostname")


def check(event: Any) -> tuple[dict[str, Any] | None, str, str]:
    """``(clean event, "", "")``, or ``(None, reason, detail)`` for an event the recorder cannot use.

    The reason is the field that was wrong (a short, fixed set: it labels a
    metric); the detail says what was wrong with it.
    """
    if not isinstance(event, dict):
        return None, "not an object", f"a {type(event).__name__}"
    kind = event.get("type")
    if not isinstance(kind, str):
        return None, "type", "missing or not a string"
    adapter = _TASK if kind.startswith("task-") else _WORKER if kind.startswith("worker-") else _OTHER
    try:
        clean: dict[str, Any] = adapter.validate_python(event)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "event"
        if field not in _FIELDS:  # the reason labels a metric: only names of our own
            field = "event"
        return None, field, f"{first['msg']}, got {_dump(first.get('input'))[:80]}"
    except Exception as exc:  # noqa: BLE001 - a mapping pydantic cannot read (keys not strings)
        return None, "event", f"{type(exc).__name__}: {exc}"[:200]
    for name in _CUT:
        value = clean.get(name)
        if value is not None:
            clean[name] = clip(value, COLUMN)
    return clean, "", ""


class BadEvents:
    """Bad events met by the capture and apply threads: counted, logged, sampled.

    ``add`` is thread-safe. Per reason, the first bad event of each minute is
    logged (with how many more there were since the last line) and kept in
    the dead-letter store; :meth:`take` hands the counts over to be saved.
    """

    def __init__(
        self,
        every: float = 60.0,
        store: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._next_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def add(self, reason: str, event: Any, detail: str = "") -> None:
        now = self.clock()
        with self._lock:
            self._pending[reason] += 1
            if now < self._next_log.get(reason, 0.0):
                self._unlogged[reason] += 1
                return
            self._next_log[reason] = now + self.every
            more = self._unlogged.pop(reason, 0)
        body = _dump(event)
        logger.warning(
            "bad event skipped (%s%s)%s: %s",
            reason,
            f": {detail}" if detail else "",
            f"; {more} more with this reason since the last such line" if more else "",
            body[:500],
        )
        if self.store is not None:
            uuid = event.get("uuid") if isinstance(event, dict) else None
            self.store(
                "event",
                f"bad event ({reason}){': ' + detail if detail else ''}; skipped",
                source="recorder",
                body=body,
                task_id=uuid if isinstance(uuid, str) else None,
            )

    def count(self, reason: str, n: int = 1) -> None:
        """Count without logging or keeping the event (its caller does both)."""
        with self._lock:
            self._pending[reason] += n

    def take(self) -> Counter[str]:
        """The counts since the last call (for the recorder to save)."""
        with self._lock:
            taken, self._pending = self._pending, Counter()
        return taken

    def give_back(self, counts: Counter[str]) -> None:
        """Counts :meth:`take` returned that could not be saved."""
        with self._lock:
            self._pending.update(counts)


def _dump(event: Any) -> str:
    try:
        return json.dumps(event, default=repr)
    except Exception:  # noqa: BLE001 - a mapping json cannot walk (keys of other types, cycles)
        return repr(event)
