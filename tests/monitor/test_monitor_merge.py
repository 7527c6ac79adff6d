"""Duplicated and reordered real events give the same rows (merge, run writer, rollups, totals)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from taskdeck.models import TaskRollup, TaskRun, TaskTotal
from taskdeck.monitor import merge
from taskdeck.monitor.rollups import Rollups, Totals
from taskdeck.monitor.runs import RunWriter

EVENTS = json.loads((Path(__file__).parent / "data" / "events.json").read_text())
BUCKETS = [0.01, 0.1, 1, 10]


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


def _db_snapshot():
    runs = {
        r["task_id"]: r
        for r in TaskRun.objects.values().order_by("task_id")
        if not r.pop("id") or not r.pop("updated_at") or True
    }
    rollups = sorted(
        (r.minute, r.name, r.queue, r.succeeded, r.failed, r.retried, sorted(r.runtime_hist.items()))
        for r in TaskRollup.objects.all()
    )
    totals = sorted(
        (t.name, t.queue, t.state, t.count, t.runtime_buckets, t.wait_buckets)
        for t in TaskTotal.objects.all()
    )
    return runs, rollups, totals


def _write(events, batch):
    writer, subscribers = RunWriter(), [Rollups(), Totals(BUCKETS)]
    for start in range(0, len(events), batch):
        changes = writer.apply(facts(events[start : start + batch]))
        for subscriber in subscribers:
            subscriber.on_changes(changes)


@pytest.mark.django_db(transaction=True)
def test_database_rows_do_not_depend_on_order_batching_or_duplicates():
    _write(EVENTS, len(EVENTS))
    expected = _db_snapshot()
    assert sum(r[3] + r[4] for r in expected[1]) == len(expected[0])  # each run counted once
    for seed, batch in ((1, 1), (2, 3), (3, 7)):
        TaskRun.objects.all().delete()
        TaskRollup.objects.all().delete()
        TaskTotal.objects.all().delete()
        rng = random.Random(seed)
        events = EVENTS + rng.sample(EVENTS, len(EVENTS))  # every event twice
        rng.shuffle(events)
        _write(events, batch)
        assert _db_snapshot() == expected
