"""What waits in a queue, read for people: raw broker messages decoded into :class:`Waiting` rows.

Nothing here raises on a message's content: junk bytes, JSON that is not
kombu's envelope, a body that is not a Celery task call all become a row
with ``problem`` set (shown as *unreadable*), never an error page. Arguments
are redacted by the payload rules (:func:`taskdeck.payloads.redact`, ``TASKDECK["PAYLOADS"]``)
before anything leaves this module.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import weakref
from dataclasses import dataclass, field
from typing import Any

from taskdeck import payloads
from taskdeck.brokers import RawMessage, SearchWindows
from taskdeck.errors import ActionRefused
from taskdeck.results import SENT_HEADER

#: Characters of an unreadable message shown as text.
PREVIEW = 300

#: What reading a broker may raise when it is down or refuses (the caller says so: 503).
try:
    from kombu.exceptions import OperationalError as _KombuOperationalError
    from redis.exceptions import RedisError as _RedisError

    BROKER_ERRORS: tuple[type[BaseException], ...] = (OSError, _KombuOperationalError, _RedisError)
except ImportError:  # a project without the redis extra
    from kombu.exceptions import OperationalError as _KombuOperationalError

    BROKER_ERRORS = (OSError, _KombuOperationalError)


class NotAQueue(ActionRefused):
    """A name that is no queue of this app's: not declared, no run sent to it, bound by no exchange.

    Its key may hold anything (another program's list, kombu's own tables):
    it is neither read nor changed.
    """


@dataclass
class Waiting:
    """One waiting message as the browser shows it."""

    #: How the message is addressed in URLs and actions: its task id, or
    #: ``raw-<digest>`` of its bytes when it has none that can be read.
    ref: str
    position: int
    priority: int | None
    size: int
    task: str | None = None
    task_id: str | None = None
    args: Any = None
    kwargs: Any = None
    eta: str | None = None
    expires: str | None = None
    retries: int | None = None
    parent_id: str | None = None
    root_id: str | None = None
    redacted: bool = False
    #: Arguments cut to ``TASKDECK["PAYLOADS"]["MAX_BYTES"]`` for a page of many (one message is shown whole).
    truncated: bool = False
    redelivered: bool = False
    #: Why the message cannot be read as a task call (None: it can).
    problem: str | None = None
    preview: str | None = None
    #: Seconds since it was published: from taskdeck's ``taskdeck_sent`` header,
    #: else from the run the recorder saw sent.
    age: float | None = None
    sent: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def readable(self) -> bool:
        return self.problem is None

    @property
    def arguments(self) -> str:
        """Args and kwargs as one line of JSON, for a table cell."""
        return f"{json.dumps(self.args, default=str)} {json.dumps(self.kwargs, default=str)}"


def digest_ref(raw: bytes) -> str:
    return "raw-" + hashlib.sha256(raw).hexdigest()[:16]


def read(message: RawMessage, app: Any = None) -> Waiting:
    """Decode ``message`` (a Redis list item, or an AMQP body with its envelope); never raises.

    With ``app``, a positional argument is redacted by its parameter's name
    too, as the capture at publish does, for the tasks ``app`` knows.
    """
    raw = message.raw
    row = Waiting(ref=digest_ref(raw), position=message.position, priority=message.priority, size=len(raw))
    try:
        _fill(row, message, app)
    except Exception as exc:  # anything the content can provoke (RecursionError on deep JSON too)
        row.problem = row.problem or f"cannot be read: {type(exc).__name__}"
    if row.problem:
        row.preview = _preview(message)
        row.args = row.kwargs = None
    return row


#: Headers an unreadable message's preview leaves out: the caller's repr of the arguments.
UNSHOWN_HEADERS = frozenset({"argsrepr", "kwargsrepr"})


def _preview(message: RawMessage) -> str:
    """The start of an unreadable message, for people, without what may hold its arguments.

    A kombu envelope (a Redis list item that is a JSON object with a body, or
    an AMQP message) is shown with its body and the argument reprs of its
    headers replaced by their size: its arguments could not be decoded, so
    they could not be redacted either. Anything else is shown as its first bytes.
    """
    raw = message.raw
    try:
        envelope: Any = message.envelope
        if envelope is None:
            try:
                envelope = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                return raw[:PREVIEW].decode("utf-8", "backslashreplace")
            if not isinstance(envelope, dict) or "body" not in envelope:
                return raw[:PREVIEW].decode("utf-8", "backslashreplace")
            body_size = len(str(envelope["body"]))
        else:
            body_size = len(raw)
        shown = {"body": f"[{body_size} bytes, not shown]"}
        shown.update((key, value) for key, value in envelope.items() if key != "body")
        headers = shown.get("headers")
        if isinstance(headers, dict):
            shown["headers"] = {
                key: f"[{len(str(value))} characters, not shown]" if key in UNSHOWN_HEADERS else value
                for key, value in headers.items()
            }
        return json.dumps(shown, default=str)[:PREVIEW]
    except Exception:  # nesting too deep to encode, say: nothing of it shown
        return f"[{len(raw)} bytes, not shown]"


def _fill(row: Waiting, message: RawMessage, app: Any) -> None:
    body: Any
    if message.envelope is not None:  # AMQP: headers and properties apart, raw is the body
        envelope, body = message.envelope, message.raw
        row.redelivered = bool(envelope.get("redelivered"))
    else:
        try:
            envelope = json.loads(message.raw)
        except (UnicodeDecodeError, ValueError):
            row.problem = "not JSON: not a message kombu wrote"
            return
        if not isinstance(envelope, dict) or not isinstance(envelope.get("properties"), dict):
            row.problem = f"JSON {type(envelope).__name__} without kombu's envelope (headers, properties)"
            return
        body = envelope.get("body")
        if envelope["properties"].get("body_encoding") == "base64":
            try:
                body = base64.b64decode(str(body), validate=True)
            except (binascii.Error, ValueError):
                row.problem = "body is not valid base64"
                return
    headers = envelope.get("headers")
    properties = envelope.get("properties") or {}
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        row.problem = "headers or properties are not objects"
        return
    priority = properties.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool) and message.envelope is not None:
        row.priority = priority
    content_type = envelope.get("content-type") or properties.get("content_type")
    if content_type != "application/json":
        row.problem = f"content type {content_type!r}: only JSON is read"
        return
    if isinstance(body, bytes | bytearray):
        try:
            body = body.decode(str(envelope.get("content-encoding") or "utf-8"))
        except (LookupError, UnicodeDecodeError):
            row.problem = "body is not text in its declared encoding"
            return
    try:
        payload = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        row.problem = "body is not JSON"
        return
    if "task" in headers:  # protocol 2: [args, kwargs, embed]
        meta = headers
        if not (isinstance(payload, list | tuple) and len(payload) == 3):
            row.problem = "body is not [args, kwargs, embed]"
            return
        args, kwargs = payload[0], payload[1]
    elif isinstance(payload, dict) and "task" in payload:  # protocol 1
        meta = payload
        args, kwargs = payload.get("args"), payload.get("kwargs")
    else:
        row.problem = "no task name in headers or body"
        return
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        row.problem = "args is not a list or kwargs is not an object"
        return
    row.task = _short(meta.get("task"))
    row.task_id = _short(meta.get("id"))
    if row.task_id and "/" not in row.task_id:  # a ref is one URL path segment
        row.ref = row.task_id
    row.eta, row.expires = _short(meta.get("eta")), _short(meta.get("expires"))
    retries = meta.get("retries")
    row.retries = retries if isinstance(retries, int) and not isinstance(retries, bool) else None
    row.parent_id, row.root_id = _short(meta.get("parent_id")), _short(meta.get("root_id"))
    sent = headers.get(SENT_HEADER)
    if isinstance(sent, int | float) and not isinstance(sent, bool) and math.isfinite(sent):
        row.sent = float(sent)
    params = positional_names(app, row.task) if app is not None and row.task else ()
    masked = payloads.masked_parts(headers, args, kwargs)
    row.args, row.kwargs, row.redacted = _redacted(row.task or "", list(args), kwargs, params, masked)
    if not isinstance(row.task, str) or not row.task:
        row.problem = "task name is not text"


def _redacted(
    task: str,
    args: list[Any],
    kwargs: dict[str, Any],
    params: tuple[str, ...] = (),
    masked: tuple[bool, bool] = (False, False),
) -> tuple[Any, Any, bool]:
    """The arguments as the payload rules show them: the same keys, hook and depth as a captured payload.

    Whatever the hook raises, or nesting too deep to be walked, hides them
    whole: a message's page never shows what the rules could not look at.
    """
    try:
        found = payloads.redact(task, args, kwargs, payloads.policy(), params, masked)
    except Exception:
        return None, None, True
    hidden = found.truncated  # not walked to the bottom: nothing kept
    return found.args, found.kwargs, found.redacted or hidden


def positional_names(app: Any, task: str) -> tuple[str, ...]:
    """Names of ``task``'s positional parameters, its module imported if this process has not yet.

    A web process imports the projects' task modules only when something asks
    (Celery imports them when a worker starts): the first message of a task
    it has not seen imports them, so ``login(user, password)`` called
    positionally shows ``password`` redacted here as in the captured payload.
    """
    app = getattr(app, "_get_current_object", lambda: app)()  # celery.current_app is a proxy
    names = getattr(getattr(app, "amqp", None), "positional_names", None)
    if names is None:
        return ()
    if task not in app.tasks and app not in _IMPORTED:
        _IMPORTED.add(app)
        with contextlib.suppress(Exception):  # a task module that fails to import: its names stay unknown
            app.loader.import_default_modules()
        cache = getattr(app.amqp, "_params", None)
        if isinstance(cache, dict):  # a name looked up before the import found nothing
            cache.pop(task, None)
    result: tuple[str, ...] = names(task)
    return result


#: Apps whose task modules this process imported for :func:`positional_names`.
_IMPORTED: weakref.WeakSet[Any] = weakref.WeakSet()


def _short(value: Any, limit: int = 255) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


# --- reading a queue -----------------------------------------------------------

#: Messages per page at most, and the deepest position a page may start at:
#: a queue of millions is read one bounded window at a time, never whole.
MAX_PAGE = 200
MAX_OFFSET = 100_000


@dataclass
class SubQueue:
    """One page of a queue (Redis: of one priority sub-queue), oldest first."""

    priority: int | None
    total: int
    offset: int
    messages: list[Waiting]
    #: Offset of the next page, None at the end (or past :data:`MAX_OFFSET`).
    next_offset: int | None

    @property
    def end(self) -> int:
        """Position after the last message of this page."""
        return self.offset + len(self.messages)


def browse(
    app: Any, queue: str, priority: int | None = None, offset: int = 0, limit: int = 50
) -> list[SubQueue]:
    """A page of ``queue``'s waiting messages per sub-queue, decoded, redacted, with their age."""
    from taskdeck import brokers

    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, min(offset, MAX_OFFSET))
    broker = brokers.for_url(app.conf.broker_url or "")
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        require_queue(app, broker, conn, queue)
        windows = broker.browse(conn, queue, priority, offset, limit, brokers.PAGE_BYTES)
    pages = []
    try:
        limit_bytes = payloads.policy().max_bytes
    except Exception:  # rules that cannot be built: no arguments were shown anyway (_redacted)
        limit_bytes = payloads.Policy.max_bytes
    for window in windows:
        rows = [read(m, app) for m in window.messages]
        for row in rows:  # a page of 200 messages of 1 MiB each is not sent whole
            if row.readable:
                row.args, row.kwargs, row.truncated = payloads.fitted(row.args, row.kwargs, limit_bytes)
        end = offset + len(rows)
        more = (len(rows) == limit or window.cut) and end < window.total and end <= MAX_OFFSET
        pages.append(SubQueue(window.priority, window.total, offset, rows, end if more else None))
    _ages([row for p in pages for row in p.messages])
    return pages


def find(app: Any, queue: str, ref: str) -> Waiting | None:
    """The waiting message ``ref`` of ``queue``, or None.

    Searched oldest first, :data:`~taskdeck.brokers.FIND_LIMIT` deep, in windows of about
    :data:`~taskdeck.brokers.FIND_BYTES` (:class:`~taskdeck.brokers.SearchWindows`).
    """
    from taskdeck import brokers

    broker = brokers.for_url(app.conf.broker_url or "")
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        require_queue(app, broker, conn, queue)
        search = SearchWindows()
        for offset, count in search:
            windows = broker.browse(conn, queue, None, offset, count)
            search.held(count, sum(len(m.raw) for w in windows for m in w.messages))
            for window in windows:
                for message in window.messages:
                    row = read(message, app)
                    if row.ref == ref:
                        _ages([row])
                        return row
            if all(len(w.messages) < count for w in windows):
                return None
    return None


def remove(app: Any, queue: str, ref: str, to: str | None = None) -> Waiting | None:
    """Delete waiting message ``ref`` of ``queue``, or move it to queue ``to``, atomically on the broker.

    Returns the message as it was, or None when it is not waiting (any more).
    """
    from taskdeck import brokers

    broker = brokers.for_url(app.conf.broker_url or "")
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        require_queue(app, broker, conn, queue)
        if to is not None and to in app.amqp.queues:
            # Declared as the app's workers declare it (RabbitMQ: its arguments, e.g. x-max-priority).
            app.amqp.queues[to](conn.default_channel).declare()
        taken = broker.remove_message(conn, queue, lambda m: read(m).ref == ref, to)
    return None if taken is None else read(taken, app)


def require_queue(app: Any, broker: Any, conn: Any, queue: str) -> None:
    """Raise :class:`NotAQueue` unless ``queue`` is one of this app's queues.

    One it declares (or ``TASKDECK["MONITOR"]["QUEUES"]`` names), one a
    recorded run was sent to, or one an exchange of the broker binds (a route's
    misspelt queue: kombu binds it on publish). Not a name found by its key's
    type alone, nor Celery's event and remote-control queues: browsing or
    deleting there would read or change what is no task queue.
    """
    from taskdeck import conf
    from taskdeck.models import TaskRun
    from taskdeck.monitor.queues import configured_queues

    if queue and not _internal(queue):
        if queue in configured_queues(app, conf.monitor()["QUEUES"])():
            return
        if TaskRun.objects.filter(queue=queue).exists() or queue in broker.bound_queues(conn):
            return
    raise NotAQueue(f"{queue!r} is not a queue of this app (declared, sent to by a run, or bound)")


def _internal(queue: str) -> bool:
    return queue.startswith(("celeryev.", "_kombu.")) or queue.endswith(".pidbox")


def _ages(rows: list[Waiting]) -> None:
    """Seconds since each message was published, from the runs the recorder saw sent."""
    import time

    from taskdeck.models import TaskRun

    now = time.time()
    for row in rows:
        if row.sent is not None:
            row.age = max(now - row.sent, 0.0)
    ids = [r.task_id for r in rows if r.task_id and r.age is None]
    if not ids:
        return
    sent = dict(
        TaskRun.objects.filter(task_id__in=ids).exclude(sent_at=None).values_list("task_id", "sent_at")
    )
    for row in rows:
        at = sent.get(row.task_id or "")
        if at is not None and row.age is None:
            row.age = max(now - at.timestamp(), 0.0)
