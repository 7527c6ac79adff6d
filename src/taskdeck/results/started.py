"""STARTED states held back a moment, and stored only for tasks still running then.

With ``CELERY_TASK_TRACK_STARTED`` Celery stores STARTED before every task,
synchronously: for a task that ends in milliseconds that is a second write
per task that nobody will ever read (the final state replaces it at once), and
it was the largest single cost left in the taskdeck stack (docs/results.md).

:class:`StartedStates` holds a task's STARTED for ``delay`` seconds
(``TASKDECK["RESULTS"]["STARTED_DELAY"]``). If the
task stores its next state sooner (SUCCESS, FAILURE, RETRY, a custom
``update_state``), the STARTED is dropped and its start time goes into that
state's row (``date_started``). Otherwise a thread of the process writes it,
while the task runs; the task's next state waits for that write, so the two
are never stored out of order. The thread has its own database connection
(Django's connections are per thread), opened the first time a task runs
longer than ``delay``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

logger = logging.getLogger("taskdeck.results")


@dataclass
class Held:
    due: float  # time.monotonic() when it is written if the task is still running
    started_at: datetime
    write: Callable[[], Any]  # builds and stores the STARTED row


class StartedStates:
    """This process's held STARTED states and the thread that writes the ones due."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._held: dict[str, Held] = {}
        self._writing: str | None = None
        self._thread: threading.Thread | None = None
        # When the thread wakes by itself (time.monotonic()); inf while it waits for work.
        self._sleeping_until = float("inf")
        self._last_due = float("-inf")  # the last hold's due time

    def hold(self, task_id: str, started_at: datetime, delay: float, write: Callable[[], Any]) -> None:
        """Write the STARTED of ``task_id`` (``write()``) in ``delay`` seconds, unless :meth:`release`d."""
        with self._cond:
            due = time.monotonic() + delay
            self._held[task_id] = Held(due, started_at, write)
            self._last_due = due
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="taskdeck-started", daemon=True)
                self._thread.start()
            if due < self._sleeping_until:
                # Woken only when this one falls due before the thread would wake anyway:
                # with one delay for all, once per idle spell, not once per task (a thread
                # switch per task was measurable on a busy worker).
                self._cond.notify()

    def release(self, task_id: str) -> datetime | None:
        """The task stores its next state: drop its STARTED if not yet written.

        Returns the start time of a dropped STARTED (for the next state's
        row), None if there was none or it is already stored. Waits while the
        thread is writing this task's STARTED.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._writing != task_id)
            held = self._held.pop(task_id, None)
            return held.started_at if held else None

    def _run(self) -> None:
        while True:
            with self._cond:
                task_id, held = self._next_due()
                self._writing = task_id
            try:
                held.write()
            except Exception:  # noqa: BLE001 - STARTED is advisory; the final row has date_started
                logger.exception("could not store the STARTED state of task %s", task_id)
            finally:
                _close_if_unusable()
                with self._cond:
                    self._writing = None
                    self._cond.notify_all()

    def _next_due(self) -> tuple[str, Held]:
        """Wait for the earliest held STARTED to fall due and take it; call with the lock held."""
        while True:
            now = time.monotonic()
            if self._held:
                task_id, held = min(self._held.items(), key=lambda item: item[1].due)
                if held.due <= now:
                    del self._held[task_id]
                    return task_id, held
                self._sleeping_until = held.due
                self._cond.wait(held.due - now)
            elif self._last_due > now:
                # Nothing held, but a task was a moment ago: on a busy process the next is about
                # to be. Waking by itself when the last would have fallen due, instead of waiting
                # to be woken, spares a wake-up and two thread switches per task (measured: every
                # hold woke the thread, which ran during the task's own store, found the task
                # released, and waited to be woken again).
                self._sleeping_until = self._last_due
                self._cond.wait(self._last_due - now)
            else:
                self._sleeping_until = float("inf")
                self._cond.wait()


def _close_if_unusable() -> None:
    """What Django does after a request, for this thread's own connections."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            conn.close_if_unusable_or_obsolete()
        except Exception:  # noqa: BLE001 - a broken connection is dropped either way
            conn.connection = None


_states: StartedStates | None = None
_lock = threading.Lock()


def states() -> StartedStates:
    """This process's :class:`StartedStates` (a forked child makes its own)."""
    global _states
    with _lock:
        if _states is None or _states.pid != os.getpid():
            _states = StartedStates()
        return _states
