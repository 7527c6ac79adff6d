"""Records and the task events waiting beside them are written in one transaction.

With the record backend the recorder reads each run's record from the Redis
stream, and the producers' task-sent events from the broker. A run whose
task-sent event and record arrive in one batch is written once
(``Recorder.write_batch``): one upsert of the run table for the batch, not a
SENT row and then its final state. These tests drive a recorder in this
process on the real stream (records written by ``RecordBackend`` as a worker
process writes them) and the real database, and hold what it writes to what
the events and the records give written apart.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from celery import current_app
from django_celery_results.models import TaskResult

from bench import one_batch
from bench.capacity import expected, host_name, store_run
from taskdeck.models import EVERY_ROLLUP, DeadLetter, TaskRollup, TaskRun, TaskTotal
from taskdeck.monitor import runs as runs_module
from taskdeck.monitor.recorder import Recorder
from taskdeck.results.record import RecordBackend, stream_key
from tests.support import rollups
from tests.support.events import Refuser

pytestmark = pytest.mark.django_db(transaction=True)

HOST = host_name(0)
RUNS = 40


def recorder(client: redis.Redis, events: list[dict[str, Any]]) -> Recorder:
    """The bench's recorder (its data path as ``build`` wires it), with the refuser."""
    rec = one_batch.recorder(client, events)
    rec.subscribers.append(Refuser())
    return rec


def sent_event(i: int) -> dict[str, Any]:
    return one_batch.sent_event(HOST, i, 1_795_564_800.0 + i)


def tables() -> dict[str, Any]:
    """Everything the recorder writes from runs, but ids and write times."""
    skip = {"id", "updated_at"}
    runs = {
        row["task_id"]: {k: v for k, v in row.items() if k not in skip} for row in TaskRun.objects.values()
    }
    return {
        "runs": runs,
        "results": sorted(TaskResult.objects.values_list("task_id", "status", "task_name", "worker")),
        "rollups": {model.__name__: rollups.rows(model) for model in EVERY_ROLLUP},
        "totals": sorted(
            TaskTotal.objects.values_list("name", "queue", "state", "count", "runtime_buckets", "runtime_sum")
        ),
    }


def clear(client: redis.Redis) -> None:
    for model in (TaskRun, TaskResult, *EVERY_ROLLUP, TaskTotal):
        model.objects.all().delete()
    client.delete(stream_key())


class RunRowsWritten:
    """Counts the run rows the recorder writes (``taskdeck.monitor.runs.write``: one upsert a call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        original = runs_module.write

        def counted(rows: list[dict[str, Any]], using: str = "default") -> None:
            self.calls.append(len(rows))
            original(rows, using)

        monkeypatch.setattr(runs_module, "write", counted)


def test_a_sent_event_and_the_record_of_its_run_in_one_batch_write_the_run_once(broker, monkeypatch):
    """One batch of 40 runs' records and their 40 task-sent events: each run's row written once,
    in one upsert (written apart: twice, a SENT row then its end), and the same runs, result rows,
    rollups and totals as written apart."""
    client = redis.Redis.from_url(broker)
    backend = RecordBackend(app=current_app)
    for i in range(RUNS):
        store_run(backend, HOST, i)
    entries = client.xrange(stream_key())
    events = [sent_event(i) for i in range(RUNS)]

    together = recorder(client, events)
    written = RunRowsWritten(monkeypatch)
    assert together.pump_records(0) == len(entries)
    assert client.xlen(stream_key()) == 0 and together.source.events == []
    assert written.calls == [RUNS]
    written_together = tables()
    assert len(written_together["runs"]) == RUNS
    assert all(run["sent_at"] is not None for run in written_together["runs"].values())
    assert {run["state"] for run in written_together["runs"].values()} == {"SUCCESS", "FAILURE"}
    rollups.assert_coarse_rows_add_up()

    clear(client)
    for _, fields in entries:
        client.xadd(stream_key(), fields)
    apart = recorder(client, [])
    written.calls.clear()
    apart.process(events)
    assert apart.pump_records(0) == len(entries)
    assert written.calls == [RUNS, RUNS]
    assert tables() == written_together


def test_a_batch_the_database_refuses_is_written_as_its_records_and_its_events_apart(broker):
    """A task-sent event whose row PostgreSQL refuses, in the batch of 40 runs' records: that event
    alone is dead-lettered; every record is written and acknowledged, and the other events too."""
    client = redis.Redis.from_url(broker)
    backend = RecordBackend(app=current_app)
    for i in range(RUNS):
        store_run(backend, HOST, i)
    events = [sent_event(i) for i in range(RUNS)]
    events[5] = {**events[5], "name": "refuse.me"}

    rec = recorder(client, events)
    assert rec.pump_records(0) > 0
    assert client.xlen(stream_key()) == 0
    runs = {r.task_id: r for r in TaskRun.objects.all()}
    assert set(runs) == {expected(HOST, i)["task_id"] for i in range(RUNS)}
    assert TaskResult.objects.count() == RUNS
    assert all(r.sent_at is not None for r in runs.values())  # the record carries the send time too
    letters = list(DeadLetter.objects.filter(kind="row"))
    assert [json.loads(bytes(d.body))["name"] for d in letters] == ["refuse.me"]
    assert letters[0].task_id == expected(HOST, 5)["task_id"] and "DataError" in letters[0].reason
    assert sum(r.succeeded + r.failed for r in TaskRollup.objects.all()) == RUNS


def test_records_the_database_could_not_take_are_dead_lettered_not_retried_forever(broker):
    """A record whose ``task_name`` is a JSON object (or a list, an unknown field, a 400-character id)
    among good ones: dead-lettered as it is read, and the good records around it written. Before,
    the database refused the batch (psycopg: cannot adapt type 'dict'), the recorder took that for
    an outage, retried it every 30 s forever, and read it again first after a restart. And a run
    claiming 2,147,483,647 retries: its own row keeps the count, its hour's rollups count 10,000
    (MAX_RETRIES_COUNTED), and a run retried once afterwards is still written (the sum overflowed
    the rollups' column, and the database refused every retried run of that hour)."""
    from taskdeck.monitor.rollups import MAX_RETRIES_COUNTED

    client = redis.Redis.from_url(broker)
    backend = RecordBackend(app=current_app)
    junk = [
        {"task_id": "junk-dict", "status": "SUCCESS", "task_name": {"a": 1}},
        {"task_id": "junk-list", "status": "SUCCESS", "result": [1, 2]},
        {"task_id": "junk-field", "status": "SUCCESS", "evil": "x"},
        {"task_id": "x" * 400, "status": "SUCCESS"},
    ]
    for i in range(RUNS):
        store_run(backend, HOST, i)
        if i < len(junk):
            client.xadd(stream_key(), {"r": json.dumps(junk[i])})
    rec = recorder(client, [])
    while rec.pump_records(0):
        pass
    assert client.xlen(stream_key()) == 0
    assert TaskResult.objects.count() == RUNS
    assert not TaskResult.objects.filter(task_id__startswith="junk").exists()
    reasons = sorted(DeadLetter.objects.values_list("reason", flat=True))
    assert len(reasons) == len(junk), reasons
    assert any("field 'task_name' must be text or null, got dict" in r for r in reasons), reasons
    assert any("unknown field 'evil'" in r for r in reasons), reasons

    row = {
        "task_id": "many-retries",
        "status": "FAILURE",
        "task_name": "t.many",
        "date_done": "2026-12-02T10:00:00+00:00",
        "meta": json.dumps({"_taskdeck": {"retries": 2_147_483_647}}),
    }
    once = {**row, "task_id": "retried-once", "meta": json.dumps({"_taskdeck": {"retries": 1}})}
    for each in (row, once):
        client.xadd(stream_key(), {"r": json.dumps(each)})
    while rec.pump_records(0):
        pass
    assert TaskRun.objects.get(task_id="many-retries").retries == 2_147_483_647
    assert TaskRun.objects.get(task_id="retried-once").state == "FAILURE"
    hour = sum(r.retried for r in TaskRollup.objects.filter(name="t.many"))
    assert hour == MAX_RETRIES_COUNTED + 1


@pytest.mark.parametrize("sent", [float("nan"), float("inf"), 1e308, -1e18, 0])
def test_a_send_time_no_run_can_have_is_left_out_of_its_record(sent):
    """The ``taskdeck_sent`` header anyone can set: NaN or 1e308 made the recorder refuse the whole
    record (result row and run) with an unclear reason; such a time is now left out of the record,
    and so is a priority outside 0-255."""
    from celery.app.task import Context

    facts = RecordBackend._run_facts(Context(taskdeck_sent=sent, delivery_info={"priority": 2**70}))
    assert facts == {}
    assert RecordBackend._run_facts(Context(taskdeck_sent=1_795_564_800.5)) == {"sent": 1_795_564_800.5}
