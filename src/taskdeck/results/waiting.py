"""How ``get()`` waits on taskdeck's database backends: results that can no longer finish are reported.

:class:`WaitingBackend` is mixed into :class:`~taskdeck.results.backend.DatabaseBackend`
(and so into write-behind), beside :class:`~taskdeck.results.canvas.CanvasBackend`.
docs/canvas.md says what Celery's canvas suite showed.

``get()`` of a chain's result, whose parent failed: Celery's own backends
look at the parents once per ``interval`` (and when the result is ready),
and at the result itself in between, so the parent's error is raised once
the failure has reached the result. Polling every few milliseconds, the
parent's failure was seen long before it reached the result (one commit per
chained step): ``get()`` raised while the result was still PENDING. Here the
parents are looked at once per ``interval`` and when the result failed, and
when a parent failed the result is given up to ``interval`` more to be
stored (never longer: a result that cannot finish is reported, not waited for).

``get()`` of a message the worker refused (stored REJECTED by
:mod:`taskdeck.rejections`) raises its ``MessageRejected`` instead of
waiting forever: Celery counts REJECTED among the unready states, since it
never stores it itself.

``GroupResult.get()`` reports a member that failed (or was revoked) as soon
as it is stored, as Celery's Redis backend does (``join_native`` over
:meth:`WaitingBackend.get_many`: the members' states in one query per poll,
in the order they finish). With django-celery-results' ordered ``join`` it
waited for every member before the failed one: a group whose first member
runs for an hour reported a revoked second member an hour later, though
the group could no longer succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from celery import states
from celery.backends.base import Backend
from celery.exceptions import TimeoutError

from taskdeck.errors import MessageRejected

#: States after which a task's state never changes: Celery's ready states, and
#: REJECTED, which taskdeck stores for a message the worker discarded without
#: running it (:mod:`taskdeck.rejections`; Celery itself never stores it).
FINAL_STATES = states.READY_STATES | {states.REJECTED}
#: First pause of a wait for results (``AsyncResult.get()``, ``GroupResult.get()``);
#: doubled up to the caller's ``interval``.
FIRST_POLL = 0.005


class WaitingBackend(Backend):
    """``AsyncResult.get()`` and ``GroupResult.get()`` of the database backends (module docstring)."""

    #: ``GroupResult.get()`` joins with :meth:`get_many`: results in the order they finish.
    supports_native_join = True
    #: Django's model of task results (django-celery-results' ``DatabaseBackend`` sets it).
    TaskModel: Any

    def get_many(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Callable[[Any], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        max_iterations: int | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(task id, meta)`` of each of ``task_ids`` as it finishes: one query per poll for them all.

        What ``GroupResult.get()`` (Celery's ``join_native``) iterates: it
        raises the first failure it is handed, so a member that failed or was
        revoked is reported when it is stored, not after every member before
        it has finished (Celery's ordered ``join``, which the database
        backends had). A REJECTED member (never run, never will be) is handed
        over as a FAILURE with its ``MessageRejected``, as ``get()`` of the
        member raises it.
        """
        self._ensure_not_eager()
        interval = 0.5 if interval is None else interval
        order = list(dict.fromkeys(task_ids))
        waiting = set(order)
        for task_id in order:
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in FINAL_STATES:
                waiting.discard(task_id)
                yield task_id, cached
        deadline = None if timeout is None else time.monotonic() + timeout
        nap = min(FIRST_POLL, interval)
        iterations = 0
        while waiting:
            found = self.final_metas([task_id for task_id in order if task_id in waiting])
            for task_id in order:
                meta = found.get(task_id)
                if meta is None:
                    continue
                waiting.discard(task_id)
                if meta["status"] == states.SUCCESS:
                    self._cache[task_id] = meta
                elif meta["status"] == states.REJECTED:
                    meta = {**meta, "status": states.FAILURE, "result": self.rejection(meta["result"])}
                if on_message is not None:
                    on_message(meta)
                yield task_id, meta
            if not waiting:
                break
            iterations += 1
            if max_iterations and iterations >= max_iterations:
                break
            if on_interval:
                on_interval()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Operation timed out ({timeout})")
                nap = min(nap, left)
            time.sleep(nap)
            nap = min(nap * 2, interval)

    def final_metas(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The meta of each of ``task_ids`` whose stored state is final (one query for them all)."""
        rows = self.TaskModel._default_manager.filter(task_id__in=task_ids, status__in=FINAL_STATES)
        metas = {}
        for task_id in rows.values_list("task_id", flat=True):
            meta = self.get_task_meta(task_id, cache=False)
            if meta["status"] in FINAL_STATES:
                metas[task_id] = meta
        return metas

    def wait_for_pending(
        self,
        result: Any,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        callback: Any = None,
        propagate: bool = True,
    ) -> Any:
        if on_message is not None:
            return super().wait_for_pending(
                result, timeout, interval, no_ack, on_message, on_interval, callback, propagate
            )
        parents = ParentCheck(self, result.id, interval, on_interval) if on_interval else None
        meta = self.wait_for(result.id, timeout, interval, no_ack, parents)
        if meta["status"] == states.REJECTED:
            # Never run and never will be: reported, where Celery would wait forever.
            error = self.rejection(meta["result"])
            if propagate:
                raise error
            return error
        if parents and meta["status"] in states.PROPAGATE_STATES:
            on_interval()  # a failed parent's own error first, as Celery's Redis backend does
        result._maybe_set_cache(meta)
        return result.maybe_throw(propagate=propagate, callback=callback)

    def rejection(self, stored: Any) -> BaseException:
        """The exception stored with a REJECTED state (``MessageRejected``), as an exception."""
        if isinstance(stored, BaseException):
            return stored
        if isinstance(stored, dict) and "exc_type" in stored:
            return self.exception_to_python(stored)
        return MessageRejected(f"the worker refused the message: {stored!r}")


class ParentCheck:
    """``get()``'s look at a result's parents: once per ``interval``; a failure waits for the result.

    ``check`` raises the error of a failed parent. Before it is raised, the
    result gets up to ``interval`` seconds to be stored failed too.
    """

    def __init__(self, backend: Backend, task_id: str, interval: float, check: Callable[[], Any]) -> None:
        self.backend, self.task_id, self.interval, self.check = backend, task_id, interval, check
        self.next = time.monotonic() + interval

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.interval
        try:
            self.check()
        except Exception:
            self.settle(now + self.interval)
            raise

    def settle(self, until: float) -> None:
        nap = 0.005
        while time.monotonic() < until:
            if self.backend.get_state(self.task_id) in states.READY_STATES:
                return
            time.sleep(nap)
            nap = min(nap * 2, 0.1)
