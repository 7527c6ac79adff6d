"""The Celery, kombu and django-celery-results internals taskdeck hooks, in one place.

taskdeck subclasses or wraps a few methods that are not their public API.
pyproject.toml caps each below its next minor release; this
table is what ``tests/test_compat.py`` checks on every run: each name must
still resolve, with the signature written here (``None``: existence only,
for properties and classes). A release that renames or reshapes one fails
that test by name, instead of failing in a worker at the first task.

Add an entry for every internal you override, wrap, call or replace. Keys
are dotted paths (module, then attributes); values are
``str(inspect.signature(...))`` as the supported releases give it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

#: Dotted path -> expected signature (None: only its existence is checked).
HOOKED_INTERNALS: dict[str, str | None] = {
    # taskdeck.app.TaskProducer: the size limit, measured where kombu serializes.
    "kombu.messaging.Producer._prepare": (
        "(self, body, serializer=None, content_type=None, content_encoding=None, "
        "compression=None, headers=None)"
    ),
    # taskdeck.app.AMQP: errors naming the argument, group and priority on task-sent.
    "celery.app.amqp.AMQP._create_task_sender": "(self)",
    "celery.app.amqp.AMQP.producer_pool": None,
    "celery.app.amqp.AMQP.publisher_pool": None,
    "celery.app.amqp.AMQP.Producer": None,
    # taskdeck.app.AMQP: payload capture (a caller's own argsrepr/kwargsrepr seen; reprs redacted).
    "celery.app.amqp.AMQP.as_task_v2": (
        "(self, task_id, name, args=None, kwargs=None, countdown=None, eta=None, group_id=None, "
        "group_index=None, expires=None, retries=0, chord=None, callbacks=None, errbacks=None, "
        "reply_to=None, time_limit=None, soft_time_limit=None, create_sent_event=False, root_id=None, "
        "parent_id=None, shadow=None, chain=None, now=None, timezone=None, origin=None, "
        "ignore_result=False, argsrepr=None, kwargsrepr=None, stamped_headers=None, "
        "replaced_task_nesting=0, **options)"
    ),
    "celery.app.amqp.AMQP.argsrepr_maxsize": None,
    "celery.app.amqp.AMQP.kwargsrepr_maxsize": None,
    # taskdeck.events.BatchTaskEvents: task events flushed on a timer.
    "celery.worker.consumer.consumer.Consumer._flush_events": "(self)",
    "celery.worker.consumer.events.Events": None,
    "celery.events.dispatcher.EventDispatcher.__init__": (
        "(self, connection=None, hostname=None, enabled=True, channel=None, "
        "buffer_while_offline=True, app=None, serializer=None, groups=None, delivery_mode=1, "
        "buffer_group=None, buffer_limit=24, on_send_buffered=None)"
    ),
    "celery.events.dispatcher.EventDispatcher.flush": "(self, errors=True, groups=True)",
    # taskdeck.rejections.RecordDecodeErrors: undecodable bodies recorded.
    "celery.worker.consumer.consumer.Consumer.on_decode_error": "(self, message, exc)",
    # taskdeck.results.connections: the worker's database connection policy.
    "celery.fixups.django._verify_django_version": "(django: 'ModuleType') -> None",
    "celery.fixups.django.DjangoFixup.worker_fixup": None,
    "celery.fixups.django.DjangoWorkerFixup.__init__": "(self, app: 'Celery') -> None",
    "celery.fixups.django.DjangoWorkerFixup.on_task_prerun": "(self, sender: 'Task', **kwargs: Any) -> None",
    "celery.fixups.django.DjangoWorkerFixup.on_task_postrun": "(self, sender: 'Task', **kwargs: Any) -> None",
    "celery.fixups.django.DjangoWorkerFixup.on_worker_process_init": "(self, **kwargs: Any) -> None",
    "celery.fixups.django.DjangoWorkerFixup.close_cache": "(self) -> None",
    # taskdeck.app.create_celery_app: namespaced settings are not reported as Celery 3 names.
    "celery.app.utils.Settings.maybe_warn_deprecated_settings": "(self)",
    "celery.app.defaults.DEFAULTS": None,
    # taskdeck.results.backend and .writebehind: the upsert and write-behind result paths.
    "django_celery_results.backends.database.DatabaseBackend._store_result": (
        "(self, task_id, result, status, traceback=None, request=None, using=None)"
    ),
    "django_celery_results.backends.database.DatabaseBackend._get_task_meta_for": "(self, task_id)",
    "django_celery_results.backends.database.DatabaseBackend._forget": "(self, task_id)",
    "django_celery_results.managers.ResultManager.get_all_expired": "(self, expires)",
    "celery.backends.base.BaseBackend.meta_from_decoded": "(self, meta)",
    # taskdeck.results.canvas: the steps after a failed chain step, stored before it.
    "celery.backends.base.Backend._fail_chain": (
        "(self, chain, exc, traceback=None, store_result=True, state='FAILURE')"
    ),
    # taskdeck.results.waiting.WaitingBackend.get_many: GroupResult.get() joins as results finish
    # (iter_native calls get_many as the key-value backends define it).
    "celery.backends.base.SyncBackendMixin.iter_native": (
        "(self, result, timeout=None, interval=0.5, no_ack=True, on_message=None, on_interval=None)"
    ),
    "celery.backends.base.BaseKeyValueStoreBackend.get_many": None,  # its default set prints in any order
    "celery.backends.base.BaseBackend._ensure_not_eager": "(self)",
    # taskdeck.brokers.redis: queue depth per priority step.
    "kombu.transport.redis.Channel._q_for_pri": "(self, queue, pri)",
    # taskdeck.brokers.redis_client.ReuseRedisClient: one client per task channel, not two per task.
    "kombu.transport.redis.Channel._create_client": "(self, asynchronous=False)",
    "kombu.transport.redis.Channel.conn_or_acquire": "(self, client=None)",
    "kombu.transport.redis.Channel.pool": None,
    "celery.worker.consumer.tasks.Tasks": None,
    # taskdeck.app._producer_channel: a pooled producer's channel, its connection's default one.
    "kombu.utils.functional.ChannelPromise": None,
    "kombu.messaging.Producer.revive": "(self, channel)",  # sets __connection__
    "kombu.connection.Connection._default_channel": None,
    # taskdeck.demo and taskdeck.monitor.cli.
    "celery.result.AsyncResult._get_task_meta": "(self)",
    "celery.local.Proxy._get_current_object": "(self)",
    # taskdeck.guard.guard_pool_slots: a request the pool cannot take gives its slot back.
    "celery.worker.worker.WorkController._process_task": "(self, req)",
    "celery.worker.worker.WorkController._process_task_sem": "(self, req)",
    # taskdeck.guard.problem: the body fields of protocol 1 and hybrid messages Celery makes headers of.
    "celery.worker.strategy.hybrid_to_proto2": "(message, body)",
    "celery.worker.strategy.proto1_to_proto2": "(message, body)",
    # taskdeck.guard.guard_amqp_bodies_of: py-amqp messages made of (msg, channel) by each channel's
    # Message class, on channels made by the connection's Channel class and kept in its ``channels``.
    "kombu.transport.pyamqp.Message.__init__": "(self, msg, channel=None, **kwargs)",
    "kombu.transport.pyamqp.Channel.Message": None,
    "kombu.transport.pyamqp.Connection.Channel": None,
    # taskdeck.beat.FileScheduler: the schedule file's folder made first.
    "celery.beat.PersistentScheduler.setup_schedule": "(self)",
}

#: Attributes set on instances (not visible on the class): class path -> names.
#: ``tests/test_compat.py`` builds an instance and checks each one.
INSTANCE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "celery.fixups.django.DjangoWorkerFixup": ("_db", "interface_errors", "DatabaseError"),
    "celery.fixups.django.DjangoFixup": ("_worker_fixup",),
}


def resolve(path: str) -> Any:
    """The object at dotted ``path``: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            target = inspect.getattr_static(target, attribute)
        return target
    raise ImportError(f"no module in {path!r}")


def signature(obj: Any) -> str | None:
    """``str(inspect.signature(obj))`` for a function, static or class method; else None."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if inspect.isfunction(obj):
        return str(inspect.signature(obj))
    return None


def changed() -> list[str]:
    """One line per entry of :data:`HOOKED_INTERNALS` that is missing or whose signature differs."""
    problems = []
    for path, expected in HOOKED_INTERNALS.items():
        try:
            found = resolve(path)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{path}: missing ({exc})")
            continue
        if expected is not None and signature(found) != expected:
            problems.append(f"{path}: signature is {signature(found)}, taskdeck was written for {expected}")
    return problems
