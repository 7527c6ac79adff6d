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
