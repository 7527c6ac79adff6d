"""taskdeck's result backend: django-celery-results' tables, one round trip per state.

Use it in place of ``django-db``::

    CELERY_RESULT_BACKEND = "taskdeck.results.backend:DatabaseBackend"

Rows, models, admin, ``AsyncResult``, groups and chords (on the
``ChordCounter`` row) are django-celery-results' own; what changes:

- each state is stored with one upsert statement (:mod:`taskdeck.results.upsert`)
  instead of a read then a write, on PostgreSQL and SQLite; other databases
  take django-celery-results' path unchanged;
- with ``CELERY_TASK_TRACK_STARTED``, STARTED is stored only for a task
  still running ``TASKDECK["RESULTS"]["STARTED_DELAY"]`` seconds (0.05 by
  default) after it started; a shorter task stores its final state only, with
  its ``date_started`` (:mod:`taskdeck.results.started`; 0 stores every
  STARTED at once, as Celery does);
- the group and parent task ids (``group_id``, ``parent_id`` in the meta, as
  Celery's own backends store them) and, with ``CELERY_RESULT_EXTENDED``, the
  queue (routing key) and the retry count are kept in ``TaskResult.meta``
  under a key of taskdeck's own (:data:`META_KEY`), beside the task's own
  ``request.meta`` keys and never over them — Celery's meta has them,
  django-celery-results drops them — so ``AsyncResult.queue`` and
  ``.retries`` answer from the database too (unless the task's own meta has
  a key of that name: it is what django-celery-results would answer);
- ``AsyncResult.get()`` polls after 5 ms, then twice as long each time up to
  its ``interval`` (0.5 s by default), instead of every ``interval`` from the
  start: a short task's result is seen in milliseconds, and a long wait
  costs no more queries than before; ``GroupResult.get()`` polls all its
  members in one query and raises the first failure as soon as it is
  stored (:mod:`taskdeck.results.waiting`).
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from celery import states
from celery.exceptions import TimeoutError
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend as DjangoDatabaseBackend
from kombu import serialization
from kombu.exceptions import EncodeError
from kombu.utils import json as kombu_json

from taskdeck import conf
from taskdeck.results import started, upsert
from taskdeck.results.canvas import CanvasBackend
from taskdeck.results.waiting import FINAL_STATES, FIRST_POLL, WaitingBackend

#: The key of ``TaskResult.meta`` that holds taskdeck's own fields (queue,
#: retries): a task's ``request.meta`` is stored beside it, as it is.
META_KEY = "_taskdeck"


class DatabaseBackend(CanvasBackend, WaitingBackend, DjangoDatabaseBackend):
    """django-celery-results' ``DatabaseBackend`` storing each state with one upsert."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        if not upsert.supports_upsert(self.TaskModel, using):
            return super()._store_result(task_id, result, status, traceback, request, using)
        held = started.states()
        if status == states.STARTED:
            delay = float(conf.get()["RESULTS"]["STARTED_DELAY"])
            if delay > 0:
                now = timezone.now()

                def write() -> None:
                    row = self.result_row(task_id, result, status, traceback, request)
                    upsert.upsert(self.TaskModel, [{**row, "date_started": now, "date_created": now}], using)

                held.hold(task_id, now, delay, write)
                return result
        row = self.result_row(task_id, result, status, traceback, request)
        started_at = held.release(task_id)
        if started_at is not None:
            # The STARTED was never stored: this state's row is created as it
            # would have been then (date_created is kept if the row exists).
            row["date_started"] = row["date_created"] = started_at
        upsert.upsert(self.TaskModel, [row], using)
        return result

    def encode_content(self, data: Any) -> tuple[str, str, Any]:
        """django-celery-results' ``encode_content``; with kombu's own JSON serializer, called directly.

        The same output (kombu's ``json.dumps``, errors as its ``EncodeError``)
        without the registry's lookups around it: four of them per stored state.
        """
        if self.serializer == "json":
            content_type, content_encoding, encoder = serialization.registry._encoders["json"]
            if encoder is kombu_json.dumps:
                try:
                    return content_type, content_encoding, kombu_json.dumps(data)
                except Exception as exc:
                    raise EncodeError(exc) from exc
        return super().encode_content(data)

    def result_row(
        self, task_id: str, result: Any, status: str, traceback: str | None = None, request: Any = None
    ) -> dict[str, Any]:
        """The ``TaskResult`` fields of one state, as django-celery-results would store them."""
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **(self._get_meta_from_request(request) or {}),
            "children": self.current_task_children(request),
        }
        row = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "traceback": traceback,
            "content_type": content_type,
            "content_encoding": content_encoding,
        }
        if request is not None:
            own = {**self._links(request), **(self._own_meta(request) if self.extended else {})}
            if own:
                meta[META_KEY] = own
            if self.extended:
                row.update(self._extended_fields(request))
        row["meta"] = self.encode_content(meta)[2]
        if status == states.STARTED:
            row["date_started"] = timezone.now()
        return row

    @staticmethod
    def _links(request: Any) -> dict[str, str]:
        """The group and the parent task of ``request``, those it has, as Celery's own backends store them."""
        links = {}
        for key, attribute in (("group_id", "group"), ("parent_id", "parent_id")):
            value = getattr(request, attribute, None)
            if isinstance(value, str) and value:
                links[key] = value
        return links

    @staticmethod
    def _own_meta(request: Any) -> dict[str, Any]:
        """The queue and retry count of ``request``, those it has (an empty row stores nothing)."""
        own: dict[str, Any] = {}
        delivery = getattr(request, "delivery_info", None)
        queue = delivery.get("routing_key") if isinstance(delivery, dict) else None
        if isinstance(queue, str) and queue:
            own["queue"] = queue
        retries = getattr(request, "retries", None)
        if isinstance(retries, int) and not isinstance(retries, bool) and retries > 0:
            own["retries"] = retries
        return own

    def meta_from_decoded(self, meta: dict[str, Any]) -> Any:
        """Celery's meta of a stored state, with taskdeck's own fields where the task's meta has none."""
        own = meta.pop(META_KEY, None)
        if isinstance(own, dict):
            for key in ("group_id", "parent_id"):
                if key in own:
                    meta.setdefault(key, own[key])
            if "queue" in own or "retries" in own:
                meta.setdefault("queue", own.get("queue"))
                meta.setdefault("retries", own.get("retries", 0))
        return super().meta_from_decoded(meta)

    def name_task(self, task_id: str, name: str) -> None:
        """Set the task name of a stored state (a safety net: the backends store it with the state)."""
        self.TaskModel._default_manager.filter(task_id=task_id).update(task_name=name)

    @cached_property
    def extended(self) -> bool:
        """``CELERY_RESULT_EXTENDED``, looked up once (Celery's lookup is slow enough to show per task)."""
        return bool(self.app.conf.find_value_for_key("extended", "result"))

    def _extended_fields(self, request: Any) -> dict[str, Any]:
        """django-celery-results' ``_get_extended_properties``, less the settings lookup."""
        args = getattr(request, "argsrepr", None)
        if args is None:
            args = getattr(request, "args", None)  # task protocol 1
        kwargs = getattr(request, "kwargsrepr", None)
        if kwargs is None:
            kwargs = getattr(request, "kwargs", None)
        return {
            "periodic_task_name": getattr(request, "periodic_task_name", None),
            "task_args": None if args is None else self.encode_content(args)[2],
            "task_kwargs": None if kwargs is None else self.encode_content(kwargs)[2],
            # An unknown task's FAILURE comes with a bare request that has only ``name``.
            "task_name": getattr(request, "task", None) or getattr(request, "name", None),
            "worker": getattr(request, "hostname", None),
        }

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
    ) -> Any:
        """Celery's polling loop with a short first pause, doubled up to ``interval``."""
        self._ensure_not_eager()
        deadline = None if timeout is None else time.monotonic() + timeout
        nap = min(FIRST_POLL, interval)
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in FINAL_STATES:
                return meta
            if on_interval:
                on_interval()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("The operation timed out.")
                nap = min(nap, left)
            time.sleep(nap)
            nap = min(nap * 2, interval)
