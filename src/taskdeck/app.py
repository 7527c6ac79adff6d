"""The Celery app factory: the notes' ``celery_app.py`` in one call."""

from __future__ import annotations

import inspect
import time
from functools import partial
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP as CeleryAMQP
from kombu import Producer, pools
from kombu.exceptions import EncodeError
from kombu.utils.functional import ChannelPromise

from taskdeck import payloads
from taskdeck.errors import MessageTooLargeError, TaskArgumentError
from taskdeck.results import FIXUP, SENT_HEADER


def create_celery_app(main: str, namespace: str = "CELERY", preset: bool = True, **kwargs: Any) -> Celery:
    """A Celery app configured from Django settings, with task autodiscovery.

    Equivalent to the notes' lines::

        app = Celery(main)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.autodiscover_tasks()

    plus taskdeck's preset (:mod:`taskdeck.preset`): the Celery settings
    taskdeck needs, each one taken where the project's settings leave it
    unset (``preset=False``: Django's settings alone), taskdeck's
    publisher, which turns an argument that cannot be serialized into a
    :class:`~taskdeck.errors.TaskArgumentError` naming the task and the argument and refuses a message over
    ``TASKDECK["MAX_MESSAGE_BYTES"]`` (:class:`~taskdeck.errors.MessageTooLargeError`),
    a worker step that refuses messages that cannot become a task call
    instead of letting them stop the worker (:mod:`taskdeck.guard`), one that
    records the messages a worker refuses (:mod:`taskdeck.rejections`), one
    that publishes task events in batches (:mod:`taskdeck.events`), one that
    gives a Redis worker's task channel one redis-py client
    (:mod:`taskdeck.brokers.redis_client`), and
    taskdeck's Django fix-up, with which workers keep their database
    connections between tasks instead of opening one per task
    (:mod:`taskdeck.results.connections`; ``TASKDECK["WORKER_DB_CONNECTIONS"]``).
    """
    kwargs.setdefault("amqp", "taskdeck.app:AMQP")
    # In place of Celery's Django fix-up (its only built-in one), not beside it:
    # both would connect their own task_prerun/task_postrun handlers.
    kwargs.setdefault("fixups", [FIXUP])
    app = Celery(main, **kwargs)
    if preset:
        from taskdeck.preset import PresetSettings

        app.config_from_object(PresetSettings(namespace), namespace=namespace)
    else:
        app.config_from_object("django.conf:settings", namespace=namespace)
    add_worker_steps(app)
    if namespace:
        app.on_after_configure.connect(partial(_namespaced_settings_are_current, f"{namespace}_"), weak=False)
    app.autodiscover_tasks()
    return app


def _namespaced_settings_are_current(prefix: str, sender: Celery, source: Any = None, **kwargs: Any) -> None:
    """Keep a worker from warning that ``CELERY_TASK_SERIALIZER`` & co. are Celery 3 settings.

    Under the ``CELERY`` namespace, ``CELERY_TASK_SERIALIZER`` is how Django
    spells ``task_serializer``. It is also the Celery 3 name of that
    setting, so Celery lists it as deprecated and prints a warning per key at
    every worker start, telling the user to run ``celery upgrade settings``,
    which would break the project. Only the keys that the namespace reads as
    current names are left out; a real Celery 3 name (``CELERY_ALWAYS_EAGER``)
    is still reported.
    """
    from celery.app.defaults import DEFAULTS

    conf = source if source is not None else sender.conf
    deprecated = getattr(conf, "deprecated_settings", None)
    if deprecated:
        conf.deprecated_settings = {
            key
            for key in deprecated
            if not (key.startswith(prefix) and key[len(prefix) :].lower() in DEFAULTS)
        }


def add_worker_steps(app: Celery) -> None:
    """taskdeck's consumer steps: malformed task messages guarded, refusals recorded, events batched,
    and on Redis one client for the acknowledgement bookkeeping instead of two per task."""
    from taskdeck.brokers.redis_client import ReuseRedisClient
    from taskdeck.events import BatchTaskEvents
    from taskdeck.guard import GuardGossip, GuardTaskMessages
    from taskdeck.rejections import RecordDecodeErrors

    app.steps["consumer"].add(GuardTaskMessages)
    app.steps["consumer"].add(GuardGossip)
    app.steps["consumer"].add(RecordDecodeErrors)
    app.steps["consumer"].add(BatchTaskEvents)
    app.steps["consumer"].add(ReuseRedisClient)


class TaskProducer(Producer):
    """kombu's producer, refusing a message over ``TASKDECK["MAX_MESSAGE_BYTES"]`` before it is sent.

    The size is that of the serialized body (arguments, keyword arguments,
    canvas), measured where kombu serializes it, so nothing is encoded twice.
    """

    def _prepare(
        self,
        body: Any,
        serializer: Any = None,
        content_type: Any = None,
        content_encoding: Any = None,
        compression: Any = None,
        headers: Any = None,
    ) -> Any:
        prepared = super()._prepare(body, serializer, content_type, content_encoding, compression, headers)
        from taskdeck import conf

        limit = conf.get()["MAX_MESSAGE_BYTES"]
        if limit and len(prepared[0]) > limit:
            task = str((headers or {}).get("task") or "?")
            raise _size_error(task, body, len(prepared[0]), int(limit))
        return prepared


def _producer_channel(producer: Any) -> Any:
    """The channel ``producer`` publishes on, if it is made; None if not (no connection is made here).

    A producer from the app's pool (``task.delay()``, ``send_task`` without one)
    holds a promise of its connection's default channel, made at its first
    publish and kept by the connection after it: that channel.
    """
    channel = getattr(producer, "_channel", None)
    if isinstance(channel, ChannelPromise):
        return getattr(getattr(producer, "__connection__", None), "_default_channel", None)
    return channel


def _reuse_redis_client(channel: Any) -> None:
    """A kombu Redis channel reuses one client (:mod:`taskdeck.brokers.redis_client`); others are left."""
    if type(channel).__module__ == "kombu.transport.redis":  # redis-py is installed: it made the channel
        from taskdeck.brokers.redis_client import reuse_client

        reuse_client(channel)


#: The repr text of arguments whose redaction failed.
NOT_SHOWN = "'[not shown: the payload capture failed]'"


class AMQP(CeleryAMQP):
    """Celery's publisher, with errors that say which task and argument failed, and payload capture."""

    Producer = TaskProducer
    _producer_pool: Any = None
    _params: dict[str, tuple[str, ...]] | None = None

    def as_task_v2(
        self, task_id: Any, name: Any, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any
    ) -> Any:
        message = super().as_task_v2(task_id, name, args, kwargs, *rest, **options)
        # The caller's own repr text may hide a secret: no capture or view may show those values.
        masked = [
            part
            for part, text, value in (
                ("args", options.get("argsrepr"), args),
                ("kwargs", options.get("kwargsrepr"), kwargs),
            )
            if payloads.custom_repr(text, value)
        ]
        if masked and isinstance(message.headers, dict):
            message.headers[payloads.MASKED_HEADER] = masked
        return message

    def positional_names(self, name: str) -> tuple[str, ...]:
        """Names of the positional parameters of task ``name`` if registered here (for redaction)."""
        if self._params is None:
            self._params = {}
        names = self._params.get(name)
        if names is None:
            names = ()
            task = self.app.tasks.get(name)
            if task is not None:
                try:
                    signature = inspect.signature(task.run)
                except (TypeError, ValueError):
                    pass
                else:
                    names = tuple(
                        p.name
                        for p in signature.parameters.values()
                        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    )
            self._params[name] = names
        return names

    @property
    def producer_pool(self) -> Any:
        # Celery's own, made with TaskProducer: kombu's shared pool group would
        # hand out plain Producers.
        if self._producer_pool is None:
            self._producer_pool = pools.ProducerPool(
                pools.connections[self.app.connection_for_write()],
                limit=self.app.pool.limit,
                Producer=TaskProducer,
            )
        return self._producer_pool

    publisher_pool = producer_pool

    def _create_task_sender(self) -> Any:
        send = super()._create_task_sender()

        def send_task_message(producer: Any, name: str, message: Any, **kwargs: Any) -> Any:
            # The message and its task-sent event go out on the producer's channel: on Redis, one
            # client for both and for every message after them (kombu makes two a task). A channel
            # not made yet is left to kombu's publish, which connects with its retry policy.
            _reuse_redis_client(_producer_channel(producer))
            if isinstance(message.headers, dict):
                # The publish time, for the run's wait time (taskdeck.results.record):
                # in the message itself, so no task-sent event is needed for it.
                message.headers[SENT_HEADER] = time.time()
            if message.sent_event is not None:
                # What the task-sent event lacks and the monitor needs: the
                # group the task belongs to and the priority it was sent with.
                headers = message.headers or {}
                message.sent_event.update(group_id=headers.get("group"), priority=kwargs.get("priority"))
                _capture(self, name, message, _queue_name(kwargs), payloads.masked_by_header(headers))
            try:
                return send(producer, name, message, **kwargs)
            except TaskArgumentError:
                raise
            except EncodeError as exc:
                # kombu serializes the whole body before sending a byte, so
                # nothing reached the broker: find the culprit and say so.
                raise _argument_error(name, message.body, exc) from exc

        return send_task_message


def _capture(amqp: AMQP, name: str, message: Any, queue: str | None, masked: tuple[bool, bool]) -> None:
    """Put the call's payload in its task-sent event; an error is counted and logged, never raised."""
    try:
        policy = payloads.policy()
        if not policy.applies(name, queue) or not isinstance(message.body, tuple):
            return
        args, kwargs, _ = message.body
        found = payloads.redact(name, args, kwargs, policy, amqp.positional_names(name), masked)
    except Exception as exc:  # noqa: BLE001 - capture must never stop a publish
        # What is secret is not known: no view may show the arguments' repr.
        for key in ("args", "kwargs"):
            message.headers[f"{key}repr"] = message.sent_event[key] = NOT_SHOWN
        payloads.ERRORS.add(name, exc)
        return
    try:
        if found.redacted:
            # The repr text travels in the headers (to the worker's events and the
            # results table) and in the task-sent event: it must not show what the payload hides.
            for key, value, limit in (
                ("args", found.args, amqp.argsrepr_maxsize),
                ("kwargs", found.kwargs, amqp.kwargsrepr_maxsize),
            ):
                if value is not None:
                    message.headers[f"{key}repr"] = message.sent_event[key] = payloads.redacted_repr(
                        value, limit
                    )
        message.sent_event["payload"] = payloads.encode(found, policy)
    except Exception as exc:  # noqa: BLE001 - an argument the JSON encoder refuses, say
        payloads.ERRORS.add(name, exc)


def _queue_name(options: dict[str, Any]) -> str | None:
    queue = options.get("queue")
    if queue is None:
        return options.get("routing_key")
    return queue if isinstance(queue, str) else getattr(queue, "name", None)


def _argument_error(task: str, body: Any, exc: Exception) -> EncodeError:
    from kombu.utils.json import dumps

    for name, label, value in _arguments(task, body):
        try:
            dumps(value)
        except (TypeError, ValueError) as err:
            return TaskArgumentError(
                name, label, f"of type {type(value).__name__} cannot be encoded as JSON ({err})"
            )
    return TaskArgumentError(task, "a message field", f"cannot be encoded ({exc})")


def _size_error(task: str, body: Any, size: int, limit: int) -> MessageTooLargeError:
    """The error for an oversized message, naming its largest argument."""
    from kombu.utils.json import dumps

    owner, culprit, largest = task, "the message", -1
    for name, label, value in _arguments(task, body):
        try:
            length = len(dumps(value).encode())
        except (TypeError, ValueError):
            continue
        if length > largest:
            owner, culprit, largest = name, label, length
    if owner != task:
        culprit = f"{culprit} of {owner!r} (in its canvas)"
    return MessageTooLargeError(task, culprit, size, limit)


def _arguments(task: str, body: Any) -> Any:
    """(task, label, value) for every argument in a protocol-2 body, canvas included."""
    if not (isinstance(body, tuple) and len(body) == 3):
        return
    args, kwargs, embed = body
    calls = [(task, args, kwargs)]
    for key in ("chain", "callbacks", "errbacks"):
        for sig in (embed or {}).get(key) or ():
            if isinstance(sig, dict):
                calls.append((sig.get("task", "?"), sig.get("args"), sig.get("kwargs")))
    chord = (embed or {}).get("chord")
    if isinstance(chord, dict):
        calls.append((chord.get("task", "?"), chord.get("args"), chord.get("kwargs")))
    for name, call_args, call_kwargs in calls:
        for i, value in enumerate(call_args or ()):
            yield name, f"positional argument {i}", value
        for key, value in (call_kwargs or {}).items():
            yield name, f"keyword argument {key!r}", value
