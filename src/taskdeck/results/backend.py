"""taskdeck's result backend: django-celery-results' tables, one round trip per state.

Use it in place of ``django-db``::

    CELERY_RESULT_BACKEND = "taskdeck.results.backend:DatabaseBackend"

Rows, models, admin, ``AsyncResult``, groups and chords (on the
``ChordCounter`` row) are django-celery-results' own; what changes:

- each state is stored with one upsert statement (:mod:`taskdeck.results.upsert`)
  instead of a read then a write, on PostgreSQL and SQLite; other databases
  take django-celery-results' path unchanged;
- with ``CELERY_RESULT_EXTENDED`` the queue (routing key) and the retry count
  are kept in ``TaskResult.meta`` — Celery's extended meta has them,
  django-celery-results drops them — so ``AsyncResult.queue`` and
  ``.retries`` answer from the database too;
- ``AsyncResult.get()`` polls after 5 ms, then twice as long each time up to
  its ``interval`` (0.5 s by default), instead of every ``interval`` from the
  start: a short task's result is seen in milliseconds, and a long wait
  costs no more queries than before.
"""

from __future__ import annotations

import time
from typing import Any

from celery import states
from celery.exceptions import TimeoutError
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend as DjangoDatabaseBackend

from taskdeck.results import upsert

#: First pause of ``AsyncResult.get()``; doubled up to its ``interval``.
FIRST_POLL = 0.005


class DatabaseBackend(DjangoDatabaseBackend):
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
        upsert.upsert(self.TaskModel, [self.result_row(task_id, result, status, traceback, request)], using)
        return result

    def result_row(
        self, task_id: str, result: Any, status: str, traceback: str | None = None, request: Any = None
    ) -> dict[str, Any]:
        """The ``TaskResult`` fields of one state, as django-celery-results would store them."""
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **(self._get_meta_from_request(request) or {}),
            "children": self.current_task_children(request),
            **self._delivery_meta(request),
        }
        row = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "traceback": traceback,
            "meta": self.encode_content(meta)[2],
            "content_type": content_type,
            "content_encoding": content_encoding,
            **self._get_extended_properties(request, traceback),
        }
        if status == states.STARTED:
            row["date_started"] = timezone.now()
        return row

    def _delivery_meta(self, request: Any) -> dict[str, Any]:
        """Queue and retries of the extended meta, which django-celery-results' columns lack."""
        if request is None or not self.app.conf.find_value_for_key("extended", "result"):
            return {}
        delivery = getattr(request, "delivery_info", None) or {}
        return {"queue": delivery.get("routing_key"), "retries": getattr(request, "retries", 0) or 0}

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
            if meta["status"] in states.READY_STATES:
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
