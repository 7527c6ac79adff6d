"""The upsert's merge rules, and the flusher's fold that mirrors them within a batch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from taskdeck.results import upsert
from taskdeck.results.flusher import fold

pytestmark = pytest.mark.django_db


def state(status, **fields):
    return {"task_id": "t1", "status": status, "result": "null", **fields}


def test_a_later_state_keeps_what_it_leaves_out():
    started = timezone.now() - timedelta(seconds=5)
    first = state("STARTED", task_name="orders.charge", worker="w@h", date_started=started)
    upsert.upsert(TaskResult, [first])
    created = TaskResult.objects.get(task_id="t1").date_created
    upsert.upsert(TaskResult, [state("REVOKED", result='"gone"')])  # no request, no extended fields
    row = TaskResult.objects.get(task_id="t1")
    assert (row.status, row.result) == ("REVOKED", '"gone"')
    assert (row.task_name, row.worker) == ("orders.charge", "w@h")
    assert row.date_started == started and row.date_created == created


def test_success_is_final():
    upsert.upsert(TaskResult, [state("SUCCESS", result="2")])
    upsert.upsert(TaskResult, [state("RETRY", result='"late"')])  # a previous attempt, stored late
    assert TaskResult.objects.get(task_id="t1").status == "SUCCESS"


def test_fold_merges_a_batch_as_the_upsert_merges_states():
    at = timezone.now()
    rows = [
        state("STARTED", task_name="a", date_started=at, date_created=at),
        {**state("SUCCESS", date_created=at + timedelta(seconds=1)), "task_id": "t1"},
        state("RETRY"),
        state("STARTED", task_id="t2"),
    ]
    folded = {row["task_id"]: row for row in fold(rows)}
    assert folded["t1"]["status"] == "SUCCESS"
    assert (folded["t1"]["task_name"], folded["t1"]["date_started"]) == ("a", at)
    assert folded["t1"]["date_created"] == at
    assert folded["t2"]["status"] == "STARTED"
