"""A running task's progress bar, from what the task reported with ``update_state``: anything a task
reports draws a bar or none, never a server error."""

from __future__ import annotations

import uuid

import pytest
from celery import current_app

from taskdeck.dashboard.views.tasks import progress
from taskdeck.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("meta", "percent"),
    [
        ({"current": 5, "total": 10}, 50.0),
        ({"current": 15, "total": 10}, 100.0),
        ({"current": 10**400, "total": 1}, None),  # no float holds it: the page was a 500
        ({"current": 1, "total": 10**400}, None),
        ({"current": float("nan"), "total": 10}, None),
        ({"current": 1, "total": 0}, None),
        ({"current": "1", "total": 10}, None),
    ],
)
def test_reported_progress_draws_a_bar_or_none(broker, meta, percent):
    task_id = str(uuid.uuid4())
    current_app.backend.store_result(task_id, meta, "PROGRESS")
    shown = progress(TaskRun(task_id=task_id, name="t"))
    assert (shown and shown["percent"]) == percent
