"""A worker never dies from a message: what cannot become a task call is refused, not run.

Celery's consumer hands a task message to the task's strategy, which builds
the request in the worker's main process; a body or header of the wrong
shape raises there, outside anything that catches it, and the main process
exits (a body of ``"hello"`` with valid ``task`` and ``id`` headers:
``ValueError: too many values to unpack (expected 3)``). With late acks the
message comes back and the worker crash-loops. Other shapes get through to the
pool and do worse: with ``[{"a": 1}, [], {}]`` the tracer raises
``InvalidTaskError`` (keyword arguments not a mapping) before it has a
request, and, having no request to mark as failed, reports the run as a
success (``fast_trace_task`` returns "not failed" when the tracer's info is
unset): a ``task-succeeded`` event for a task that never ran.

:class:`GuardTaskMessages` checks every task message in the consumer before
Celery sees it (:func:`problem`): its size (``TASKDECK["WORKER_MAX_MESSAGE_BYTES"]``),
headers, task id and name, that its body decodes, and the body's shape and
types. A message that fails is acknowledged, recorded as ``REJECTED`` with
the reason and dead-lettered with its raw headers and body
(:func:`taskdeck.rejections.record`); the worker goes on with the next one.
Messages Celery itself refuses safely (a content type it does not accept, a
body that is not valid JSON, a message that is not a task message, an
unknown task name) are left to Celery, whose refusal taskdeck records the
same way. Anything still raised while Celery takes a message is caught
around its handler and refused the same way; broker connection errors still
propagate, so the consumer reconnects as it always did.

The Celery internals this relies on are listed in :data:`CELERY_INTERNALS`.
"""

from __future__ import annotations

import bz2
import logging
import lzma
import math
import zlib
from typing import Any

from celery import bootsteps
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.transport.virtual import Channel as VirtualChannel

from taskdeck import conf

logger = logging.getLogger("taskdeck")

#: Every Celery internal taskdeck's worker steps hook, as ``module:qualified.name``
#: (``pkgutil.resolve_name`` resolves each): a Celery upgrade that renames or
#: removes one must fail a test, not silently unguard the worker.
CELERY_INTERNALS: tuple[str, ...] = (
    # Wrapped per consumer: the event loops call it to make the handler of each task message.
    "celery.worker.consumer.consumer:Consumer.create_task_handler",
    # What the event loops are expected to call it from (asynloop for prefork/solo, synloop otherwise).
    "celery.worker.loops:asynloop",
    "celery.worker.loops:synloop",
    # Read by the guard: the errors that must still propagate, the instance attributes
    # ``connection_errors`` and ``channel_errors`` its __init__ sets (the kombu transport's).
    "celery.worker.consumer.consumer:Consumer.__init__",
    "kombu.connection:Connection.connection_errors",
    "kombu.connection:Connection.channel_errors",
    # Wrapped per consumer by taskdeck.rejections.RecordDecodeErrors (undecodable bodies).
    "celery.worker.consumer.consumer:Consumer.on_decode_error",
    # Replaced per channel (virtual transports: Redis) by a class that reads any envelope.
    "kombu.transport.virtual.base:Channel.Message",
    # Replaced per AMQP connection and channel by a class that inflates no body past the limit:
    # the message's constructor (its py-amqp message's properties and body) and the channel class
    # py-amqp's connection makes its channels of.
    "kombu.transport.pyamqp:Message.__init__",
    "kombu.transport.pyamqp:Channel.Message",
    "kombu.transport.pyamqp:Connection.Channel",
    "amqp.connection:Connection.__init__",  # sets ``channels``, the open ones by id
    "celery.worker.consumer.tasks:Tasks",
    # Wrapped per worker: sends a request to the pool after the pool's semaphore gave it a slot,
    # and gives the slot back only when the task is revoked (GuardTaskMessages, pool slots).
    "celery.worker.worker:WorkController._process_task",
    "celery.worker.worker:WorkController._process_task_sem",
    # Replaced per transport (Redis): the class its channels are made of, so that every channel
    # of the worker (events, remote control) reads any envelope, not only the task consumer's.
    "kombu.transport.virtual.base:Transport.Channel",
    "kombu.transport.virtual.base:Transport.channels",
    # Protocol 1 and hybrid bodies: the fields Celery turns into headers.
    "celery.worker.strategy:hybrid_to_proto2",
    "celery.worker.strategy:proto1_to_proto2",
    # Wrapped per channel (Redis): the reader of each BRPOP reply, which parses the list item
    # as JSON before any message exists, and the client call that returns the reply.
    "kombu.transport.redis:Channel._brpop_read",
    "kombu.transport.redis:Channel.client",
    "kombu.transport.virtual.base:Transport._deliver",
    # Wrapped per worker by GuardGossip: the handler of each worker event a worker receives.
    "celery.worker.consumer.gossip:Gossip.on_message",
    "celery.worker.consumer.gossip:Gossip.get_consumers",
    "celery.worker.consumer.gossip:Gossip.__init__",
    # Sent by Celery for the refusals it handles itself; taskdeck.rejections records them.
    "celery.signals:task_rejected",
    "celery.signals:task_unknown",
    # The cause of the forged SUCCESS the body check prevents (see this module's docstring).
    "celery.app.trace:fast_trace_task",
)

_ID = 255  # django-celery-results' task_id and task_name columns
_EMBED_LISTS = ("callbacks", "errbacks", "chain")
_STR_HEADERS = ("argsrepr", "kwargsrepr", "shadow", "root_id", "parent_id", "group", "lang", "origin")
#: The fields of a body with ``args`` (protocol 1, or a hybrid under protocol 2 headers) that
#: Celery's ``hybrid_to_proto2`` makes headers of, the message's own headers over them.
_HYBRID_FIELDS = (
    "lang", "task", "id", "root_id", "parent_id", "group", "meth", "shadow", "eta", "expires",
    "retries", "timelimit", "argsrepr", "kwargsrepr", "origin",
)  # fmt: skip


class GuardTaskMessages(bootsteps.StartStopStep):
    """Consumer step: refuse task messages that cannot become a task call, before they can stop the worker."""

    name = "taskdeck.guard.GuardTaskMessages"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        celery_create_task_handler = c.create_task_handler

        def create_task_handler(*args: Any, **kw: Any) -> Any:
            return guarded(c, celery_create_task_handler(*args, **kw))

        # On the instance: the event loop calls it each time the consumer (re)connects.
        c.create_task_handler = create_task_handler
        guard_pool_slots(c)
        _drain_dead_letters()
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        # Virtual transports (Redis) build the message from a JSON envelope
        # before any consumer callback runs: one that cannot be read would
        # raise in the transport and stop the worker. Every channel of the
        # connection: a junk PUBLISH on the event or remote-control channel
        # (``PUBLISH /0.celery.pidbox 5``) stopped every worker of the broker.
        channel = getattr(c.task_consumer, "channel", None)
        if isinstance(channel, VirtualChannel):
            guard_envelopes_of(channel)
            guard_raw_items(channel)
        else:
            guard_amqp_bodies_of(channel)


def guard_envelopes_of(channel: Any) -> None:
    """``channel`` (a virtual transport's) and every other channel of its transport, made or to
    come, read any envelope (:func:`guarded_envelopes`)."""
    transport = channel.connection  # a virtual channel's connection is its transport
    channel_class = getattr(transport, "Channel", None)
    if (
        isinstance(channel_class, type)
        and issubclass(channel_class, VirtualChannel)
        and not getattr(channel_class.Message, "taskdeck_guarded", False)
    ):
        transport.Channel = type(
            channel_class.__name__, (channel_class,), {"Message": guarded_envelopes(channel_class.Message)}
        )
    for made in {channel, *(getattr(transport, "channels", None) or ())}:
        if isinstance(made, VirtualChannel) and not getattr(made.Message, "taskdeck_guarded", False):
            made.Message = guarded_envelopes(made.Message)


def guard_amqp_bodies_of(channel: Any) -> None:
    """RabbitMQ (py-amqp): every channel of ``channel``'s connection, made or to come, inflates no
    compressed body past ``WORKER_MAX_MESSAGE_BYTES`` (:func:`inflate_problem`).

    kombu's message inflates a body whole as it is made, before any consumer
    callback: 11 kB of gzip was 11 MB in the worker's main process, and a
    broker takes messages of 128 MiB by default. The connection's channel
    class and its open channels (tasks, remote control, gossip) get a message
    class that inflates at most the limit and one byte first.
    """
    from kombu.transport.pyamqp import Channel as AmqpChannel

    if not isinstance(channel, AmqpChannel):
        return
    connection = channel.connection
    channel_class = getattr(connection, "Channel", None)
    if (
        isinstance(channel_class, type)
        and issubclass(channel_class, AmqpChannel)
        and not getattr(channel_class.Message, "taskdeck_guarded", False)
    ):
        connection.Channel = type(
            channel_class.__name__, (channel_class,), {"Message": guarded_amqp_bodies(channel_class.Message)}
        )
    for made in {channel, *(getattr(connection, "channels", None) or {}).values()}:
        if isinstance(made, AmqpChannel) and not getattr(made.Message, "taskdeck_guarded", False):
            made.Message = guarded_amqp_bodies(made.Message)


def guarded_amqp_bodies(message_class: type[Any]) -> Any:
    """``message_class`` (kombu's py-amqp message), not inflating a body past the worker's limit.

    Such a message loses its ``compression`` header and gets :data:`INFLATES_ERROR`,
    so :func:`problem` refuses it with the reason.
    """

    class GuardedMessage(message_class):
        taskdeck_guarded = True

        def __init__(self, msg: Any, channel: Any = None, **kwargs: Any) -> None:
            headers = msg.properties.get("application_headers")
            kind = headers.get("compression") if isinstance(headers, dict) else None
            if isinstance(kind, str) and (reason := inflate_problem(kind, msg.body)):
                kept = {key: value for key, value in headers.items() if key != "compression"}
                msg.properties["application_headers"] = {**kept, INFLATES_ERROR: reason}
            super().__init__(msg, channel=channel, **kwargs)

    return GuardedMessage


def guard_pool_slots(consumer: Any) -> None:
    """A request the pool cannot take gives its slot back and is refused; the worker does not wedge.

    Under the prefork pool, Celery takes a slot of the pool's semaphore before
    it hands a request to the pool, and gives it back when the task ends, or
    when it was revoked: not when handing it over raises (arguments nested
    too deep to pickle: ``RecursionError``). Each such message kept a slot, and
    a worker of concurrency 2 that got two of them stayed alive, heartbeating,
    and ran nothing more. The worker's ``_process_task`` is wrapped: on an
    error it gives the slot back, if it took one, and refuses the message
    (:func:`taskdeck.rejections.refuse`) instead of raising: the call may come
    from the semaphore's release, outside the guarded message handler.
    """
    from taskdeck.rejections import refuse

    worker: Any = getattr(consumer, "controller", None)
    process = getattr(worker, "_process_task", None)
    if process is None or getattr(process, "taskdeck_guarded", False):
        return
    must_raise = tuple(consumer.connection_errors) + tuple(consumer.channel_errors) + (MemoryError,)

    def _process_task(req: Any) -> Any:
        try:
            return process(req)
        except must_raise:
            raise
        except Exception as exc:
            if getattr(worker, "process_task", None) == getattr(worker, "_process_task_sem", object()):
                worker._quick_release()
            logger.exception("the pool could not take a task; refusing its message")
            refuse(consumer, req.message, f"the worker could not take it ({type(exc).__name__}: {exc})")
            return None

    _process_task.taskdeck_guarded = True  # type: ignore[attr-defined]
    worker._process_task = _process_task


class GuardGossip(bootsteps.Step):
    """Consumer step: a worker event a worker cannot read is skipped, not fatal.

    Workers listen to each other's ``worker-*`` events (Celery's gossip, on
    unless ``--without-gossip``), and Celery's handler reads them unchecked: one
    event published on the event exchange with a body that is not an object, or
    a heartbeat with ``timestamp: "abc"``, raised in the main process of every
    worker of the broker at once, and stopped them all. The handler is wrapped
    (before the gossip consumer is made, which binds it): an event it cannot
    handle is skipped and logged once a minute per kind of error. Events are
    not dead-lettered here: the recorder counts the bad ones it receives
    (``taskdeck_recorder_bad_events_total``).
    """

    name = "taskdeck.guard.GuardGossip"
    requires = ("celery.worker.consumer.gossip:Gossip",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        gossip = getattr(c, "gossip", None)
        if gossip is not None and not getattr(gossip.on_message, "taskdeck_guarded", False):
            gossip.on_message = guarded_events(gossip.on_message)
        super().__init__(c, **kwargs)


def guarded_events(on_message: Any) -> Any:
    """Gossip's ``on_message(prepare, message)``, skipping an event it cannot handle."""
    import time

    logged: dict[str, float] = {}

    def on_event(prepare: Any, message: Any) -> Any:
        try:
            return on_message(prepare, message)
        except MemoryError:
            raise
        except Exception as exc:
            kind = type(exc).__name__
            now = time.monotonic()
            if now - logged.get(kind, -60.0) >= 60:
                logged[kind] = now
                logger.warning(
                    "skipped a worker event that cannot be read (%s: %s); body %.200r "
                    "(logged once a minute per kind of error)",
                    kind,
                    exc,
                    getattr(message, "body", None),
                )
            return None

    on_event.taskdeck_guarded = True  # type: ignore[attr-defined]
    return on_event


#: Header a message gets when its envelope could not be read (a virtual transport's, e.g. Redis).
ENVELOPE_ERROR = "taskdeck-envelope-error"


def guarded_envelopes(message_class: type[Any]) -> Any:
    """``message_class`` (a virtual transport's), making a message of an envelope it cannot read.

    That message has no headers but :data:`ENVELOPE_ERROR` and the raw
    headers, so :func:`problem` refuses it, and it is acknowledged like any
    other instead of stopping the worker.
    """

    class GuardedMessage(message_class):
        taskdeck_guarded = True

        def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
            try:
                payload = _uninflated(payload, channel)
                super().__init__(payload, channel=channel, **kwargs)
            except Exception as exc:
                super().__init__(_readable(payload, channel, exc), channel=channel, **kwargs)

    return GuardedMessage


#: Header a message gets when its compressed body would inflate past the worker's limit.
INFLATES_ERROR = "taskdeck-inflates-error"
#: Decompressors that stop at a size, for kombu's compressions from the standard library.
_DECOMPRESSORS: dict[str, Any] = {
    "application/x-gzip": zlib.decompressobj,
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


def _uninflated(payload: Any, channel: Any) -> Any:
    """``payload`` (a virtual transport's envelope), or, when its compressed body inflates past
    ``WORKER_MAX_MESSAGE_BYTES`` (:func:`inflate_problem`), the same envelope without its
    ``compression`` header and with :data:`INFLATES_ERROR`.
    """
    headers: Any = payload.get("headers") if isinstance(payload, dict) else None
    kind = headers.get("compression") if isinstance(headers, dict) else None
    if not isinstance(kind, str):
        return payload  # every message but a compressed one: nothing more is looked up
    try:
        properties = payload.get("properties") or {}
        raw = channel.decode_body(payload.get("body"), properties.get("body_encoding"))
    except Exception:
        return payload  # not what it says it is: kombu refuses it and says why
    reason = inflate_problem(kind, raw)
    if reason is None:
        return payload
    kept = {key: value for key, value in headers.items() if key != "compression"}
    return {**payload, "headers": {**kept, INFLATES_ERROR: reason}}


def inflate_problem(kind: str, raw: Any) -> str | None:
    """Why a body compressed as ``kind`` must not be inflated: it inflates past
    ``WORKER_MAX_MESSAGE_BYTES``; None when it may (or kombu cannot inflate it, and says why).

    kombu's message inflates a body whole as it is made (292 kB of gzip became
    300 MB in the worker's main process); this inflates at most the limit and one byte.
    """
    limit = conf.get()["WORKER_MAX_MESSAGE_BYTES"]
    if not limit:
        return None
    from kombu.compression import _aliases

    make = _DECOMPRESSORS.get(_aliases.get(kind, kind))
    if make is None:
        return None
    try:
        raw = raw if isinstance(raw, bytes) else str(raw).encode("latin-1")
        size = len(make().decompress(raw, int(limit) + 1))
    except Exception:
        return None  # not what it says it is: kombu refuses it and says why
    if size <= limit:
        return None
    return f"the body inflates ({kind}) to over the worker's limit of {int(limit):,} bytes"


def guard_raw_items(channel: Any) -> None:
    """Redis: a list item that is not JSON at all must not stop the worker.

    kombu parses each item it pops (``BRPOP``) before a message exists, so an
    item pushed by something other than kombu (``LPUSH default junk``) raised
    in the event loop and stopped the worker, the item already gone. The
    channel's ``BRPOP`` reader is wrapped: the reply is kept as it arrives,
    and when kombu cannot parse the item it is delivered as an envelope that
    :func:`problem` refuses, so it is acknowledged, recorded and dead-lettered
    with its raw text like any other bad message. Nothing changes for an item
    kombu can read (one attribute set per reply).
    """
    import base64
    import json

    handlers = getattr(channel, "handlers", None)
    if not isinstance(handlers, dict) or "BRPOP" not in handlers:
        return
    read = handlers["BRPOP"]
    if getattr(read, "taskdeck_guarded", False):
        return

    def keep_replies(client: Any) -> None:
        parse = client.parse_response

        def parse_response(connection: Any, command_name: Any, **options: Any) -> Any:
            reply = parse(connection, command_name, **options)
            if command_name == "BRPOP":
                channel.taskdeck_reply = reply
            return reply

        client.parse_response = parse_response
        client.taskdeck_keeps_replies = True

    def brpop_read(**options: Any) -> Any:
        client = channel.client  # a new one after a reconnection
        if not getattr(client, "taskdeck_keeps_replies", False):
            keep_replies(client)
        channel.taskdeck_reply = None
        try:
            return read(**options)
        except ValueError as exc:  # json's and UTF-8's errors: kombu could not parse the item
            reply = channel.taskdeck_reply
            if not reply:
                raise
            dest, item = reply
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8", "surrogateescape")
            try:
                json.loads(raw)
            except ValueError:
                pass
            else:
                raise  # the item was JSON: the error came from elsewhere
            # The raw bytes travel base64-encoded, as kombu's own envelopes carry bodies.
            envelope = {"body": base64.b64encode(raw).decode(), "properties": {"body_encoding": "base64"}}
            queue = (dest.decode() if isinstance(dest, bytes) else str(dest)).rsplit(channel.sep, 1)[0]
            channel.connection._deliver(_readable(envelope, channel, exc), queue)
            return True

    brpop_read.taskdeck_guarded = True  # type: ignore[attr-defined]
    handlers["BRPOP"] = brpop_read


def _readable(payload: Any, channel: Any, exc: Exception) -> dict[str, Any]:
    """An envelope kombu can read, carrying what was wrong with ``payload`` and its raw parts."""
    import uuid

    envelope = payload if isinstance(payload, dict) else {"body": payload}
    properties = envelope.get("properties")
    properties = dict(properties) if isinstance(properties, dict) else {}
    properties.setdefault("delivery_tag", str(uuid.uuid4()))
    delivery = properties.get("delivery_info")
    properties["delivery_info"] = {
        "exchange": "",
        "routing_key": "",
        **(delivery if isinstance(delivery, dict) else {}),
    }
    body = envelope.get("body")
    try:
        channel.decode_body(body, properties.get("body_encoding"))
    except Exception:  # keep the body as it is in the envelope
        properties.pop("body_encoding", None)
        body = body if isinstance(body, str) else None
    return {
        "body": body,
        "content-type": envelope.get("content-type")
        if isinstance(envelope.get("content-type"), str)
        else None,
        "content-encoding": None,
        "headers": {ENVELOPE_ERROR: f"{type(exc).__name__}: {exc}", "headers": envelope.get("headers")},
        "properties": properties,
    }


def guarded(consumer: Any, on_task_received: Any) -> Any:
    """``on_task_received`` (Celery's handler of one task message), refusing what it cannot take."""
    from taskdeck.rejections import refuse

    must_raise = tuple(consumer.connection_errors) + tuple(consumer.channel_errors) + (MemoryError,)

    def on_message(message: Any) -> Any:
        try:
            reason = problem(consumer.app, message)
        except Exception as exc:  # a check that fails is itself a reason
            reason = f"the message could not be checked ({type(exc).__name__}: {exc})"
        if reason is not None:
            return refuse(consumer, message, reason)
        try:
            return on_task_received(message)
        except must_raise:
            raise
        except Exception as exc:  # anything else Celery raises for this message must not stop the worker
            logger.exception("taking a task message raised; refusing the message")
            return refuse(consumer, message, f"the worker could not take it ({type(exc).__name__}: {exc})")

    return on_message


def problem(app: Any, message: Any) -> str | None:
    """What makes ``message`` impossible to run as a task call, or ``None`` when Celery may take it.

    ``None`` also for what Celery refuses safely itself (see the module's docstring).
    """
    limit = conf.get()["WORKER_MAX_MESSAGE_BYTES"]
    body = getattr(message, "body", None)
    size = len(body) if isinstance(body, bytes | str) else 0
    if limit and size > limit:
        return (
            f"the body is {size:,} bytes, over the worker's limit of {int(limit):,} "
            "(TASKDECK['WORKER_MAX_MESSAGE_BYTES'])"
        )
    headers = message.headers
    if not isinstance(headers, dict):
        return f"its headers are a {type(headers).__name__}, not a mapping"
    if ENVELOPE_ERROR in headers:
        return f"the broker's envelope of the message cannot be read ({headers[ENVELOPE_ERROR]})"
    if limit:
        text = sum(len(value) for value in headers.values() if isinstance(value, str | bytes))
        if text > limit:  # argsrepr of 50 MB ran and was stored whole in the results table
            return (
                f"its headers hold {text:,} characters of text, over the worker's limit of {int(limit):,} "
                "(TASKDECK['WORKER_MAX_MESSAGE_BYTES'])"
            )
    if INFLATES_ERROR in headers:
        return f"{headers[INFLATES_ERROR]} (TASKDECK['WORKER_MAX_MESSAGE_BYTES'])"
    protocol_1 = "task" not in headers
    if not protocol_1:
        reason = _name_problem(app, headers, "header")
        if reason is not None:
            return reason or None  # "": a task this worker does not know, which Celery records
    try:
        payload = message.decode()  # cached on the message: Celery does not decode it again
    except (ContentDisallowed, DecodeError):
        return None  # Celery refuses it and says why
    except Exception as exc:
        return f"the body cannot be decoded ({type(exc).__name__}: {exc})"
    if protocol_1:
        if not isinstance(payload, dict) or "task" not in payload:
            return None  # not a task message: Celery refuses it as unknown
        reason = _name_problem(app, payload, "the body's")
        if reason is not None:
            return reason or None
    fields, where = _effective_headers(payload, headers)
    return _body_problem(payload, protocol_1) or _header_problem(fields, where)


def _name_problem(app: Any, fields: dict[str, Any], where: str) -> str | None:
    """What is wrong with the task name and id of ``fields``; "" for a task this worker does not know."""
    name, task_id = fields.get("task"), fields.get("id")
    if not isinstance(name, str) or not name or len(name) > _ID:
        return f"{where} 'task' must be a task name (text of 1 to {_ID} characters), got {_show(name)}"
    if not isinstance(task_id, str) or not task_id or len(task_id) > _ID:
        return f"{where} 'id' must be a task id (text of 1 to {_ID} characters), got {_show(task_id)}"
    if name not in app.tasks:
        return ""  # Celery records it as FAILURE (NotRegistered); taskdeck names it
    return None


def _effective_headers(payload: Any, headers: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The headers Celery's request will have, and which of them came from the body.

    A body with ``args`` (protocol 1, or a hybrid under protocol 2 headers)
    gives :data:`_HYBRID_FIELDS`, the message's headers over them; a protocol 1
    body without ``args`` is itself the headers (``proto1_to_proto2``).
    """
    if not isinstance(payload, dict) or ("args" not in payload and "task" in headers):
        return headers, lambda key: "header"
    if "args" in payload:
        fields = {key: payload[key] for key in _HYBRID_FIELDS if key in payload}
    else:
        fields = dict(payload)
        if "taskset" in payload:
            fields["group"] = payload["taskset"]
    body_keys = set(fields) - set(headers)
    fields.update(headers)
    return fields, lambda key: "the body's" if key in body_keys else "header"


def _body_problem(payload: Any, protocol_1: bool = False) -> str | None:
    if isinstance(payload, dict) and ("args" in payload or protocol_1):  # protocol 1, or a hybrid body
        args, kwargs, embed = payload.get("args", ()), payload.get("kwargs", {}), payload
        if not isinstance(args, list | tuple):
            return f"the body's 'args' must be a list, got {_show(args)}"
    else:
        if not isinstance(payload, list | tuple) or len(payload) != 3:
            return (
                "the body must be a list of three items, [args, kwargs, embed] (Celery's task "
                f"message protocol 2), got {_show(payload)}"
            )
        args, kwargs, embed = payload
        if not isinstance(args, list | tuple):
            return f"the body's args (item 0) must be a list, got {_show(args)}"
        if embed is not None and not isinstance(embed, dict):
            return f"the body's embed (item 2) must be a mapping or null, got {_show(embed)}"
    if not isinstance(kwargs, dict):
        return f"the body's kwargs must be a mapping, got {_show(kwargs)}"
    for key in _EMBED_LISTS:
        value = (embed or {}).get(key)
        if value is not None and not (
            isinstance(value, list | tuple) and all(isinstance(sig, dict) for sig in value)
        ):
            return f"the body's {key!r} must be a list of signatures (mappings) or null, got {_show(value)}"
    chord = (embed or {}).get("chord")
    if chord is not None and not isinstance(chord, dict):
        return f"the body's 'chord' must be a signature (a mapping) or null, got {_show(chord)}"
    return None


def _header_problem(headers: dict[str, Any], where: Any = lambda key: "header") -> str | None:
    """What is wrong with the headers Celery reads; ``where(key)`` says where a field came from."""
    from celery.utils.time import maybe_iso8601, maybe_make_aware

    for key in _STR_HEADERS:
        value = headers.get(key)
        if value is not None and not isinstance(value, str):
            return f"{where(key)} {key!r} must be text or null, got {_show(value)}"
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        return f"{where('retries')} 'retries' must be a whole number of at least 0, got {_show(retries)}"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple) and len(limits) == 2 and all(_seconds(v) for v in limits)
    ):
        return (
            f"{where('timelimit')} 'timelimit' must be [hard, soft] seconds (numbers or null), "
            f"got {_show(limits)}"
        )
    for key in ("eta", "expires"):
        value = headers.get(key)
        if value is None:
            continue
        try:
            if not isinstance(value, str):
                raise TypeError("not text")
            parsed = maybe_iso8601(value)
            if parsed is not None:
                maybe_make_aware(parsed).timestamp()
        except Exception as exc:
            return f"{where(key)} {key!r} must be an ISO 8601 date and time, got {_show(value)} ({exc})"
    ignore = headers.get("ignore_result")
    if ignore is not None and not isinstance(ignore, bool):
        return f"{where('ignore_result')} 'ignore_result' must be true, false or null, got {_show(ignore)}"
    return None


def _seconds(value: Any) -> bool:
    if value is None:
        return True
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def _show(value: Any) -> str:
    """A short description of a bad value for an error message: its type and the start of its repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'…' if len(text) > 80 else ''}"


def _drain_dead_letters() -> None:
    """Move dead letters spooled while the database was down into it, when a worker starts."""
    from taskdeck import deadletter

    try:
        deadletter.drain_spool()
    except Exception:
        logger.exception(
            "could not move spooled dead letters into the database; the next dead letter retries"
        )


def requeue_problem(app: Any, letter: Any) -> str | None:
    """Why dead letter ``letter`` cannot be re-published as a task message now, or ``None``.

    It must be a whole task message (not cut when stored), for a task the
    project defines, that passes every check a worker makes.
    """
    from kombu.message import Message
    from kombu.serialization import prepare_accept_content

    if letter.kind != "message":
        return f"only task messages can be requeued, this is a dead {letter.kind}"
    if letter.truncated:
        return f"only the first {len(bytes(letter.body or b'')):,} bytes of its body were kept"
    if letter.body is None:
        return "it has no body"
    headers = letter.headers
    if not isinstance(headers, dict) or {ENVELOPE_ERROR, "(not a mapping)", "(cut)"} & set(headers):
        return "its headers were not kept as a mapping"
    if not letter.properties.get("routing_key") and not letter.properties.get("exchange"):
        return "the exchange and routing key it came from are unknown"
    if "task" not in headers:
        return "it is not a task message (no 'task' header)"
    message = Message(
        body=bytes(letter.body),
        content_type=letter.properties.get("content_type"),
        content_encoding=letter.properties.get("content_encoding"),
        headers={key: value for key, value in headers.items() if key != "compression"},
        accept=prepare_accept_content(app.conf.accept_content),
    )
    reason = problem(app, message)
    if reason is None and headers.get("task") not in app.tasks:
        # The web process has not imported the project's task modules (Celery discovers them when a
        # worker starts): import them as a worker would, then ask again.
        app.loader.import_default_modules()
        if headers.get("task") not in app.tasks:
            reason = f"task {headers.get('task')!r} is not registered in this project"
    if reason is None:
        try:
            message.decode()
        except Exception as exc:
            reason = f"the body cannot be decoded ({type(exc).__name__}: {exc})"
    return reason
