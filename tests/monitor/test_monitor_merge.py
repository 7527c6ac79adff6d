"""Duplicated and reordered real events give the same rows (merge, run writer, rollups, totals).

The coarse rollups (quarter hours, hours) are checked against the minute rows
they must add up to, also when a run's contribution moves to another hour.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from pathlib import Path

import pytest

from taskdeck import conf
from taskdeck.models import (
    EVERY_ROLLUP,
    ROLLUPS,
    TaskRollup,
    TaskRollupHour,
    TaskRollupQuarter,
    TaskRun,
    TaskTotal,
)
from taskdeck.monitor import merge
from taskdeck.monitor.reconcile import ResultsSource
from taskdeck.monitor.recorder import Recorder
from taskdeck.monitor.rollups import Rollups, Totals
from taskdeck.monitor.runs import RunWriter
from tests.support import rollups

EVENTS = json.loads((Path(__file__).parent / "data" / "events.json").read_text())
BUCKETS = [0.01, 0.1, 1, 10]
# Five copies of the recording (new task ids), 7 minutes apart: the first finishes in one hour,
# the others in the next, two copies per quarter hour, so coarse rows add up several minutes.
SPREAD = [
    {
        **e,
        **{k: f"{e[k]}-{copy}" for k in ("uuid", "root_id", "parent_id") if e.get(k)},
        "timestamp": e["timestamp"] + copy * 420,
    }
    for copy in range(5)
    for e in EVENTS
]


def facts(events):
    return [f for e in events if (f := merge.fact_from_event(e)) is not None]


def fold_all(events):
    rows = {}
    for fact in facts(events):
        rows[fact.task_id] = merge.apply(rows.get(fact.task_id), fact)
    return rows


def test_recorded_events_cover_a_workload():
    """The recording (tests/monitor/data/events.json) is a real run: retries, chain, chord, failure."""
    rows = fold_all(EVENTS)
    by_name = {}
    for row in rows.values():
        by_name.setdefault(row["name"], []).append(row)
    charge = by_name["orders.tasks.charge_payment"][0]
    assert (charge["state"], charge["retries"], charge["queue"], charge["parent_id"]) == (
        "SUCCESS",
        2,
        "high_priority",
        "",
    )
    assert charge["exception"] == ""  # the final attempt succeeded
    (feed,) = by_name["catalog.tasks.import_feed"]
    assert feed["state"] == "FAILURE" and "must be http(s)" in feed["exception"] and feed["traceback"]
    (summarize,) = by_name["reports.tasks.summarize"]
    (collect,) = by_name["reports.tasks.collect_sales"]
    assert summarize["parent_id"] == collect["task_id"] and summarize["root_id"] == collect["task_id"]
    header = by_name["catalog.tasks.resize_image"]
    (callback,) = by_name["catalog.tasks.publish_gallery"]
    assert {h["group_id"] for h in header} == {callback["group_id"]} != {""}
    assert all(r["state"] in merge.FINAL and r["wait_time"] is not None for r in rows.values())


@pytest.mark.parametrize("seed", range(25))
def test_any_order_and_duplicates_give_the_same_rows(seed):
    expected = fold_all(EVENTS)
    rng = random.Random(seed)
    shuffled = EVENTS + rng.sample(EVENTS, len(EVENTS) // 2)  # half of them twice
    rng.shuffle(shuffled)
    assert fold_all(shuffled) == expected


def test_final_state_never_moves_back():
    (task_id,) = {e["uuid"] for e in EVENTS if e.get("name") == "catalog.tasks.import_feed"}
    own = [e for e in EVENTS if e["uuid"] == task_id]
    final = next(e for e in own if e["type"] == "task-failed")
    late_start = {**next(e for e in own if e["type"] == "task-started"), "timestamp": final["timestamp"] + 60}
    row = fold_all([*own, late_start])[task_id]
    assert row["state"] == "FAILURE" and row["finished_ts"] == final["timestamp"]


def test_results_row_does_not_override_an_event():
    fact = merge.fact_from_event(next(e for e in EVENTS if e["type"] == "task-succeeded"))
    later = merge.RunFact(
        task_id=fact.task_id, state="FAILURE", timestamp=fact.timestamp + 5, source="results"
    )
    for order in ([fact, later], [later, fact]):
        row = merge.fold(None, order)
        assert row["state"] == "SUCCESS" and row["reconstructed"] is False


def test_lost_and_stuck_give_way_to_the_next_fact_only():
    """STUCK and LOST (set on the row by the liveness tick) survive a duplicate event, not a later one."""
    (task_id,) = {e["uuid"] for e in EVENTS if e.get("name") == "catalog.tasks.import_feed"}
    own = [e for e in EVENTS if e["uuid"] == task_id]
    sent, received, started = (
        next(e for e in own if e["type"] == t)
        for t in merge.EVENT_KINDS
        if t in {"task-sent", "task-received", "task-started"}
    )
    stuck = {**fold_all([sent])[task_id], "state": "STUCK"}
    assert merge.fold(stuck, facts([sent]))["state"] == "STUCK"
    assert merge.fold(stuck, facts([received]))["state"] == "RECEIVED"
    lost = {**fold_all([sent, received, started])[task_id], "state": "LOST"}
    assert merge.fold(lost, facts([received, started]))["state"] == "LOST"
    again = {**received, "timestamp": started["timestamp"] + 10, "hostname": "heir@h"}
    moved = merge.fold(lost, facts([again]))
    assert (moved["state"], moved["worker"]) == ("RECEIVED", "heir@h")
    final = next(e for e in own if e["type"] == "task-failed")
    assert merge.fold(lost, facts([final]))["state"] == "FAILURE"


def test_a_sent_event_stamped_after_the_worker_took_the_task_does_not_put_it_back():
    """The publisher sends task-sent after the message; on a busy host, or with its clock ahead of
    the worker's, the event is stamped after the worker's received and started: still STARTED."""
    (task_id,) = {e["uuid"] for e in EVENTS if e.get("name") == "catalog.tasks.import_feed"}
    own = {e["type"]: e for e in EVENTS if e["uuid"] == task_id}
    received, started = own["task-received"], own["task-started"]
    late_sent = {**own["task-sent"], "timestamp": round(started["timestamp"] + 0.004, 6)}
    for order in itertools.permutations([late_sent, received, started]):
        row = fold_all(list(order))[task_id]
        assert (row["state"], row["state_at"]) == ("STARTED", started["timestamp"]), order
        stamps = (late_sent["timestamp"], round(received["timestamp"], 6))
        assert (row["sent_ts"], row["received_ts"]) == stamps
    # Flagged STUCK while only the sent event was in: the worker's facts still move it on.
    stuck = {**fold_all([late_sent])[task_id], "state": "STUCK"}
    assert merge.fold(stuck, facts([received]))["state"] == "RECEIVED"
    assert merge.fold(stuck, facts([late_sent]))["state"] == "STUCK"


def _write(events, batch):
    writer, subscribers = RunWriter(), [Rollups(), Totals(BUCKETS)]
    for start in range(0, len(events), batch):
        changes = writer.apply(facts(events[start : start + batch]))
        for subscriber in subscribers:
            subscriber.on_changes(changes)


@pytest.mark.django_db(transaction=True)
def test_database_rows_do_not_depend_on_order_batching_or_duplicates():
    _write(SPREAD, len(SPREAD))
    expected = rollups.snapshot()
    minutes = expected[1]["TaskRollup"].values()
    assert sum(r["succeeded"] + r["failed"] for r in minutes) == len(expected[0])  # each run counted once
    counts = (TaskRollup.objects.count(), TaskRollupQuarter.objects.count(), TaskRollupHour.objects.count())
    assert counts == (35, 21, 14)  # 7 names and queues in 5, 3 and 2 periods
    rollups.assert_coarse_rows_add_up()
    for seed, batch in ((1, 1), (2, 3), (3, 7)):
        for model in (TaskRun, *EVERY_ROLLUP, TaskTotal):
            model.objects.all().delete()
        rng = random.Random(seed)
        events = SPREAD + rng.sample(SPREAD, len(SPREAD))  # every event twice
        rng.shuffle(events)
        _write(events, batch)
        assert rollups.snapshot() == expected
        rollups.assert_coarse_rows_add_up()


@pytest.mark.django_db(transaction=True)
def test_a_reconstructed_run_moved_by_its_late_events_leaves_its_old_hour():
    """Rebuilt from its result row (done just before an hour), then its events arrive (just after it).

    The event's finish wins over the result row's and the sent event brings the
    queue: the run's contribution moves to the next hour and another queue, and
    every table takes it out of the old row and puts it in the new one.
    """
    from django_celery_results.models import TaskResult

    hour, name = 1795564800, "orders.tasks.confirm_order"  # an hour's start (UTC)
    TaskResult.objects.create(task_id="t-1", task_name=name, status="SUCCESS", result="1")
    TaskResult.objects.filter(task_id="t-1").update(  # date_done is auto_now
        date_started=dt.datetime.fromtimestamp(hour - 1.0, dt.UTC),
        date_done=dt.datetime.fromtimestamp(hour - 0.2, dt.UTC),
    )
    recorder = Recorder(
        source=None,
        runs=RunWriter(),
        subscribers=[Rollups(), Totals(BUCKETS)],
        results=ResultsSource(),
        settings=conf.monitor(),
    )
    assert recorder.reconcile(None, None) == 1
    assert TaskRun.objects.get(task_id="t-1").reconstructed
    for model in ROLLUPS:
        assert set(rollups.rows(model)) == {(hour - model.period, name, "")}, model.__name__
    rollups.assert_coarse_rows_add_up()

    recorder.process(
        [
            {"type": "task-sent", "uuid": "t-1", "name": name, "queue": "orders", "timestamp": hour - 2.0},
            {"type": "task-started", "uuid": "t-1", "hostname": "w@h", "timestamp": hour - 1.0},
            {
                "type": "task-succeeded",
                "uuid": "t-1",
                "hostname": "w@h",
                "runtime": 1.1,
                "timestamp": hour + 0.1,
            },
        ]
    )
    assert not TaskRun.objects.get(task_id="t-1").reconstructed
    for model in ROLLUPS:
        assert set(rollups.rows(model)) == {(hour, name, "orders")}, model.__name__
        assert rollups.rows(model)[(hour, name, "orders")]["succeeded"] == 1
    rollups.assert_coarse_rows_add_up()
    assert list(TaskTotal.objects.values_list("name", "queue", "count")) == [(name, "orders", 1)]


@pytest.mark.django_db(transaction=True)
def test_runs_written_in_one_json_statement_read_back_as_bulk_create_writes_them():
    """runs.write (PostgreSQL: one json_populate_recordset upsert) against bulk_create, field by field.

    Texts with quotes, backslashes, non-ASCII and empty values, floats and
    whole numbers, timestamps to the microsecond, attempts as JSON, and an
    update of a run whose liveness columns (not the merge's) must stay.
    """
    from django.db import connection

    from taskdeck.monitor import runs

    assert connection.vendor == "postgresql"
    base = {**runs.row_from_model({f: None for f in (*runs.PLAIN, *runs.TIMESTAMPS.values())})}
    rows = []
    for i in range(5):
        row = dict(base)
        row.update(
            task_id=f"t-{i}",
            state=["SUCCESS", "FAILURE", "STARTED", "SENT", "RETRY"][i],
            state_at=1764536400.123456 + i,
            name=["a.b", 'quo"te\\back', "naïve ✓", "", "x" * 255][i],
            args=["(1, 'é')", "", "\n\t", "{}", "()"][i],
            retries=i,
            priority=[None, 0, 9, 255, None][i],
            wait_time=[None, 0.0, 1e-6, 3, 2.5][i],
            runtime=[0.000123, None, 12, 0.5, None][i],
            reconstructed=bool(i % 2),
            attempts=[[], [{"worker": "w@h", "n": 1, "t": 1.5}], None, [{"é": "✓"}], []][i],
            sent_ts=1764536399.000001 + i,
            started_ts=[None, 1764536400.999999, 1764536400.5, None, 1764536401.25][i],
            finished_ts=[1764536401.000001, 1764536402.654321, None, None, None][i],
            first_seen_ts=1764536399.000001,
        )
        rows.append(row)

    def read():
        return {
            r["task_id"]: {k: v for k, v in r.items() if k not in ("id", "updated_at")}
            for r in TaskRun.objects.values()
        }

    TaskRun.objects.bulk_create(
        [runs.model_from_row(r) for r in rows],
        update_conflicts=True,
        unique_fields=["task_id"],
        update_fields=runs.UPDATE_FIELDS,
    )
    expected = read()
    TaskRun.objects.all().delete()
    runs.write(rows)
    assert read() == expected
    # An update keeps what the liveness tick wrote, and takes the merge's fields.
    lost = dt.datetime(2025, 11, 30, 21, 0, 0, 123456, tzinfo=dt.UTC)
    TaskRun.objects.filter(task_id="t-2").update(lost_at=lost, lost_worker="w@h")
    rows[2] = {**rows[2], "state": "SUCCESS", "finished_ts": 1764536403.000002, "result": "42"}
    runs.write([rows[2]])
    after = TaskRun.objects.get(task_id="t-2")
    assert (after.lost_at, after.lost_worker, after.state, after.result) == (lost, "w@h", "SUCCESS", "42")
    assert after.finished_at == dt.datetime(2025, 11, 30, 21, 0, 3, 2, tzinfo=dt.UTC)
    # JSON has no NaN: such a batch is written by bulk_create, as before.
    runs.write([{**rows[0], "runtime": float("nan")}, {**rows[1], "result": "nan next door"}])
    assert TaskRun.objects.get(task_id="t-0").runtime != TaskRun.objects.get(task_id="t-0").runtime
    assert TaskRun.objects.get(task_id="t-1").result == "nan next door"


@pytest.mark.django_db(transaction=True)
def test_rollups_added_in_sql_are_the_rows_the_python_sums_write():
    """Rollups and totals on PostgreSQL (a statement per table) against a locked read and upsert in Python.

    Every event twice, shuffled, in batches of 3: contributions put in, taken
    out and moved (late events that name a run), rows emptied and deleted.
    """
    from django.db import connection, transaction

    from taskdeck.monitor import rollups as rollup_writer

    assert connection.vendor == "postgresql"
    rng = random.Random(7)
    events = SPREAD + rng.sample(SPREAD, len(SPREAD))
    rng.shuffle(events)

    def write(in_sql: bool) -> list:
        for model in (TaskRun, *EVERY_ROLLUP, TaskTotal):
            model.objects.all().delete()
        writer, subscriber, totals = RunWriter(), Rollups(), Totals(BUCKETS)
        for start in range(0, len(events), 3):
            moves = rollup_writer.deltas(writer.apply(facts(events[start : start + 3])))
            if not moves:
                continue
            with transaction.atomic():
                for model in EVERY_ROLLUP:
                    if in_sql:
                        rollup_writer._add_in_sql(model, rollup_writer.moves_for(model, moves), "default")
                    else:
                        subscriber._write(model, rollup_writer.moves_for(model, moves))
                if in_sql:
                    totals._add_in_sql(json.dumps(totals.sums(moves)))
                else:
                    totals._write(moves)
        counted = {
            (t.name, t.queue, t.state): (t.count, t.runtime_buckets, t.wait_buckets, round(t.runtime_sum, 9))
            for t in TaskTotal.objects.all()
        }
        return [*(rollups.rows(model) for model in EVERY_ROLLUP), counted]

    in_python = write(False)
    assert all(in_python) and all(count for count, *_ in in_python[-1].values())
    assert write(True) == in_python
    rollups.assert_coarse_rows_add_up()
    # A batch that takes out what was never put in: no bucket at 0 or below is kept
    # (as in Python), and a row with something left is not deleted.
    for model in ROLLUPS:
        model.objects.all().delete()
    moves = [((1795566000, "never.written", "", "SUCCESS", 0.5, 0.1, 0), -1)]
    for model in ROLLUPS:
        rollup_writer._add_in_sql(model, moves, "default")
    for model in ROLLUPS:
        (row,) = rollups.rows(model).values()
        assert (row["runtime_hist"], row["wait_hist"], row["succeeded"]) == ({}, {}, -1)
