"""LOST and STUCK in Chromium: counted on the overview, filtered in the task list, explained on the run.

The rows are written as the recorder's liveness tick leaves them; a real
worker killed and a real queue without consumers are in
tests/faults/test_lost_and_stuck.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from taskdeck.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)


def run(task_id: str, state: str, **fields):
    now = timezone.now()
    base = {
        "name": "orders.tasks.charge_payment",
        "state_at": now.timestamp(),
        "queue": "default",
        "first_seen_at": now - dt.timedelta(minutes=5),
        "sent_at": now - dt.timedelta(minutes=5),
    }
    return TaskRun.objects.create(task_id=task_id, state=state, **{**base, **fields})


def test_lost_and_stuck_on_the_overview_list_and_run_page(live_server, page, accounts, login):
    now = timezone.now()
    lost = dict(lost_at=now, lost_worker="w1@gone", redeliver_at=now + dt.timedelta(hours=1))
    run("lost-1", "LOST", worker="w1@gone", received_at=now - dt.timedelta(minutes=4), **lost)
    run("lost-then-ok", "SUCCESS", worker="w2@up", finished_at=now, **lost)
    run(
        "stuck-1",
        "STUCK",
        queue="nobody",
        stuck_at=now,
        stuck_reason="no online worker consumes queue nobody",
    )
    run("sent-1", "SENT")

    login(page, "viewer")
    assert page.inner_text("#lost-count") == "1"
    assert page.inner_text("#stuck-count") == "1"

    page.click("#lost-link")
    page.wait_for_selector("#rows tr[data-task]")
    assert page.locator("#rows tr[data-task] .badge").all_text_contents() == ["lost"]
    assert page.is_checked("input[name=state][value=LOST]")

    page.goto(f"{live_server.url}/taskdeck/tasks/?state=STUCK")
    assert page.locator("#rows tr[data-task] .badge").all_text_contents() == ["stuck"]

    page.goto(f"{live_server.url}/taskdeck/tasks/lost-then-ok/")
    lost_step = page.inner_text("#step-lost")
    assert "w1@gone went offline" in lost_step and "redelivered: success on w2@up" in lost_step
