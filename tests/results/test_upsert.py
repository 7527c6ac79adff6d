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


@pytest.mark.parametrize("final", ["FAILURE", "REVOKED", "SUCCESS"])
def test_a_retry_stored_after_the_next_attempt_ended_is_ignored(final):
    """Celery sends a retry's message before it stores the RETRY: the next attempt may end first."""
    upsert.upsert(TaskResult, [state(final, result='"last attempt"')])
    upsert.upsert(TaskResult, [state("RETRY", result='"attempt before"')])
    assert TaskResult.objects.get(task_id="t1").status == final
    assert fold([state(final), state("RETRY")])[0]["status"] == final


def test_a_retry_replaces_a_state_that_is_not_ready_and_a_ready_state_replaces_a_retry():
    upsert.upsert(TaskResult, [state("STARTED")])
    upsert.upsert(TaskResult, [state("RETRY")])
    assert TaskResult.objects.get(task_id="t1").status == "RETRY"
    upsert.upsert(TaskResult, [state("FAILURE")])
    assert TaskResult.objects.get(task_id="t1").status == "FAILURE"
    upsert.upsert(TaskResult, [state("STARTED")])  # run again under its id: shown running
    assert TaskResult.objects.get(task_id="t1").status == "STARTED"


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


def test_a_batch_as_one_json_document_writes_what_rows_one_by_one_write():
    """PostgreSQL: a batch goes as one JSON parameter; row by row each takes the VALUES statement.

    The same merge rules either way: kept fields, the date created kept, a
    SUCCESS not replaced by a state that is not ready, NULLs, texts JSON must
    escape, datetimes to the microsecond, a date left out set by the statement.
    """
    from django.db import connection

    assert connection.vendor == "postgresql"
    at = timezone.now().replace(microsecond=123457)
    before = [
        {**state("STARTED", task_name="a.b", worker="w@h", date_started=at), "task_id": f"t{i}"}
        for i in range(4)
    ] + [{**state("SUCCESS", result="1"), "task_id": "t4"}]
    after = [
        {**state("SUCCESS", result='"naïve ✓ \\" \\\\ \\n"'), "task_id": "t0", "date_done": at},
        {
            **state("FAILURE", result="{}", traceback='Traceback\n  x\t"y"', meta='{"children": []}'),
            "task_id": "t1",
        },
        {**state("REVOKED", task_name=None, task_args=None, result="null"), "task_id": "t2"},
        {**state("RETRY", result="3", task_name="other.name"), "task_id": "t3"},
        {**state("RETRY", result='"late"'), "task_id": "t4"},  # SUCCESS stays
    ]

    def table():
        return {
            r["task_id"]: {k: v for k, v in r.items() if k not in ("id", "date_done", "date_created")}
            | {"done_is_set": r["date_done"] is not None}
            for r in TaskResult.objects.values()
        }

    for row in before:
        upsert.upsert(TaskResult, [row])
    for row in after:
        upsert.upsert(TaskResult, [row])
    one_by_one = table()
    created = {r.task_id: r.date_created for r in TaskResult.objects.all()}
    assert one_by_one["t4"]["status"] == "SUCCESS" and one_by_one["t2"]["task_name"] == "a.b"
    TaskResult.objects.all().delete()
    upsert.upsert(TaskResult, before)
    created_in_batch = {r.task_id: r.date_created for r in TaskResult.objects.all()}
    upsert.upsert(TaskResult, after)
    assert table() == one_by_one
    assert {r.task_id: r.date_created for r in TaskResult.objects.all()} == created_in_batch
    assert TaskResult.objects.get(task_id="t0").date_done == at and len(created) == 5
    assert (TaskResult, "postgresql", upsert.JSON, False) in upsert._statements  # the batches took it


@pytest.mark.parametrize("batch", [False, True])
def test_in_order_a_state_not_ready_done_before_the_stored_one_is_ignored(batch):
    """The recorder's rows (``in_order``): a RETRY that reaches the table after its run's FAILURE.

    Without the rule the RETRY replaces the FAILURE (only SUCCESS is final):
    the row would say the run is still being retried.
    """
    at = timezone.now()
    failed = state("FAILURE", result='"boom"', date_done=at)
    late_retry = state("RETRY", result='"again"', date_done=at - timedelta(seconds=1))
    other = {**state("SUCCESS", result="1"), "task_id": "t2"}

    def write(rows, in_order):
        upsert.upsert(TaskResult, [*rows, other] if batch else rows, in_order=in_order)

    write([failed], True)
    write([late_retry], True)
    assert TaskResult.objects.get(task_id="t1").status == "FAILURE"
    # A later state that is not ready still replaces it (a task run again under its id) ...
    write([state("STARTED", date_done=at + timedelta(seconds=1))], True)
    assert TaskResult.objects.get(task_id="t1").status == "STARTED"
    # ... and a ready state always does, as without the rule.
    write([state("FAILURE", result='"old"', date_done=at - timedelta(seconds=5))], True)
    assert TaskResult.objects.get(task_id="t1").status == "FAILURE"
    # Without it (the direct and write-behind backends): as django-celery-results, the last one
    # written, but for a RETRY after a ready state (Celery stores it after sending the next attempt).
    write([late_retry], False)
    assert TaskResult.objects.get(task_id="t1").status == "FAILURE"
    write([state("STARTED", date_done=at - timedelta(seconds=1))], False)
    assert TaskResult.objects.get(task_id="t1").status == "STARTED"
