"""Two recorders at once give exactly the rows and rollups one gives.

A recorder restarted on another host before the old one stopped: both
receive every event. Rollups and totals are +1/-1 moves, taken from the
change a batch makes to a run; two recorders that both read a new run as
absent would both add it. Each batch's transaction takes one lock
(``taskdeck.monitor.runs.lock_writers``), so the second reads what the first
wrote, changes nothing and moves nothing.

The test runs the same events (twenty copies of a recorded workload:
retries, a chain, a chord, a failure) through one real recorder process,
then, on emptied tables, through two at once, and compares every run, every
rollup table and the totals. Control: with the lock taken out, the two
recorders counted some runs twice in 1 of 2 runs of this test (the race
needs both to apply the same batch at the same moment).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from taskdeck.models import EVERY_ROLLUP, TaskRun, TaskTotal
from taskdeck.monitor.merge import FINAL
from tests.support import rollups
from tests.support.events import publish_events, wait_applied

pytestmark = pytest.mark.django_db(transaction=True)

RECORDED = json.loads((Path(__file__).parent / "data" / "events.json").read_text())
COPIES = 20


def workload() -> list[dict]:
    """Five copies of the recording with their own ids, a few minutes apart, ending a minute ago."""
    shift = time.time() - 60 - COPIES * 180 - max(e["timestamp"] for e in RECORDED)
    return [
        {
            **e,
            **{k: f"{e[k]}-{copy}" for k in ("uuid", "root_id", "parent_id") if e.get(k)},
            "timestamp": e["timestamp"] + shift + copy * 180,
        }
        for copy in range(COPIES)
        for e in RECORDED
    ]


def publish_by_run(events: list[dict]) -> None:
    """Every event of a run in one message, two runs a message: as a worker's batch carries a
    short task whose sent event is off. A run then goes from absent to finished in one batch,
    which is where two recorders could both count it."""
    by_run: dict[str, list[dict]] = {}
    for event in events:
        by_run.setdefault(event["uuid"], []).append(event)
    runs = list(by_run.values())
    publish_events([[e for run in runs[start : start + 2] for e in run] for start in range(0, len(runs), 2)])


def test_two_recorders_at_once_record_what_one_records(start_recorder):
    events = workload()
    runs = len({e["uuid"] for e in events})
    first = start_recorder("old")
    wait_applied("old")
    publish_by_run(events)
    wait_applied("old")
    alone = rollups.snapshot()
    assert len(alone[0]) == runs == COPIES * 8  # 8 runs in the recording
    assert {r["state"] for r in alone[0].values()} <= FINAL
    minutes = alone[1]["TaskRollup"].values()
    assert sum(r["succeeded"] + r["failed"] for r in minutes) == runs  # each run counted once
    assert sum(t[3] for t in alone[2]) == runs

    for model in (TaskRun, *EVERY_ROLLUP, TaskTotal):
        model.objects.all().delete()
    # The new one, while the old one still runs. Both past their start-up: they take the
    # workload at the same moment, the case where a run could be counted twice.
    second = start_recorder("new")
    wait_applied("old", "new")
    publish_by_run(events)
    wait_applied("old", "new")
    assert first.alive() and second.alive()
    together = rollups.snapshot()
    assert together[0] == alone[0]
    assert together[1] == alone[1]
    assert together[2] == alone[2]
    rollups.assert_coarse_rows_add_up()
