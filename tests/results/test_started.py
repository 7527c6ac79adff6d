"""Held STARTED states: dropped for a task that ends in time, written for one still running."""

from __future__ import annotations

import threading
import time

from django.utils import timezone

from taskdeck.results.started import StartedStates


def test_a_short_task_drops_its_started_and_keeps_the_start_time():
    held, written = StartedStates(), []
    now = timezone.now()
    held.hold("t1", now, 60, lambda: written.append("t1"))
    assert held.release("t1") == now
    assert written == [] and held.release("t1") is None


def test_a_running_task_gets_its_started_written_before_its_next_state():
    held, order = StartedStates(), []
    writing = threading.Event()

    def write():
        writing.set()
        time.sleep(0.2)  # the next state must wait for this write
        order.append("STARTED")

    held.hold("t1", timezone.now(), 0.01, write)
    assert writing.wait(30)
    assert held.release("t1") is None  # already stored: nothing to carry over
    order.append("SUCCESS")
    assert order == ["STARTED", "SUCCESS"]


def test_a_busy_process_does_not_wake_the_thread_per_task_and_a_long_task_is_still_written():
    """As in a worker: each task held, released at its end, then the task's own store lets the
    thread run (here a sleep). The thread wakes by itself, not once per task; a task that then
    runs past the delay still gets its STARTED written."""
    held, written = StartedStates(), []
    wakes = 0
    notify = held._cond.notify

    def counted(n: int = 1) -> None:
        nonlocal wakes
        wakes += 1
        notify(n)

    held._cond.notify = counted  # type: ignore[method-assign]
    for i in range(200):
        held.hold(f"t{i}", timezone.now(), 0.05, lambda: written.append("short"))
        assert held.release(f"t{i}") is not None
        time.sleep(0.001)  # the store's round trip: the thread runs now, finds nothing held
    assert wakes <= 20, wakes  # about once per 50 ms of tasks at most, not 200
    running = threading.Event()
    held.hold("long", timezone.now(), 0.05, running.set)
    assert running.wait(30), "the long task's STARTED was written"
    assert written == []
