"""Generated events, good and bad, into the real recorder process on the real event exchange.

Each example publishes a few good runs (names, queues, arguments and
results of any text: long, with NUL characters, lone surrogates, any
script; retries, runtimes) interleaved with bad events: copies of the good
ones with one field broken (a timestamp that is not a number or out of
range, ``runtime: "fast"``, an id that is not text or too long, a clock or
time-zone offset Celery cannot read, ...), heartbeats with broken counts,
bodies that are not objects and messages that do not decode.

What must hold after every example: every good run is recorded exactly as
the merge of its events says (the bad copies of its events change nothing),
each good run is counted once in the rollups, every bad event is counted
once, and the recorder is the same process throughout.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskdeck.models import RecorderState, TaskRollup, TaskRun
from taskdeck.monitor import merge
from taskdeck.monitor.validation import check
from tests.support.events import publish_events, publish_raw, wait_applied
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
#: (field, value) pairs no event may carry: each makes the event bad.
BROKEN_TASK_FIELDS = st.sampled_from(
    [
        ("timestamp", "abc"),
        ("timestamp", None),
        ("timestamp", -1),
        ("timestamp", 1e300),
        ("timestamp", float("nan")),
        ("runtime", "fast"),
        ("runtime", -2.5),
        ("retries", "many"),
        ("retries", 2**40),
        ("uuid", 5),
        ("uuid", ""),
        ("uuid", "u" * 256),
        ("uuid", None),
        ("type", ["task-sent"]),
        ("type", None),
        ("utcoffset", "x"),
        ("utcoffset", 1e9),
        ("name", 42),
        ("queue", {"a": 1}),
        ("priority", 2**40),
    ]
)
BROKEN_HEARTBEATS = st.sampled_from(
    [
        {"active": "lots"},
        {"active": -1},
        {"processed": 2**70},
        {"loadavg": ["high"]},
        {"freq": "often"},
        {"freq": 0},
        {"hostname": None},
        {"timestamp": "abc"},
        {"clock": "x"},
    ]
)
NOT_OBJECTS = st.one_of(ANY_TEXT, st.integers(), st.lists(st.integers(), max_size=3), st.none())
UNDECODABLE = st.sampled_from(
    [
        (b"\x80\x81 not json", "application/json"),
        (b"{", "application/json"),
        (b"\x80\x04K\x01.", "application/x-python-serialize"),
        (b"a: b", "application/x-yaml"),
    ]
)


@st.composite
def runs(draw):
    """Good runs: the four events of each, with generated identity and results."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        start = time.time() - draw(st.floats(60, 3000))
        final = draw(st.sampled_from(["task-succeeded", "task-failed"]))
        worker = {"hostname": draw(ANY_TEXT.filter(bool)), "utcoffset": 0, "clock": 1}
        sent = {
            "type": "task-sent",
            "name": draw(ANY_TEXT),
            "queue": draw(ANY_TEXT),
            "routing_key": draw(ANY_TEXT),
            "args": draw(JSON),
            "kwargs": draw(JSON),
            "retries": draw(st.integers(0, 5)),
            "timestamp": start,
        }
        end = {"type": final, "timestamp": start + 1.5, **worker}
        if final == "task-succeeded":
            end.update(result=draw(JSON), runtime=draw(st.floats(0, 1e6)))
        else:
            end.update(exception=draw(ANY_TEXT), traceback=draw(ANY_TEXT))
        received = {"type": "task-received", "timestamp": start + 0.5, **worker}
        started = {"type": "task-started", "timestamp": start + 1.0, **worker}
        out.append([sent, received, started, end])
    return out


@st.composite
def bad_events(draw, good):
    """Broken copies of good events, broken heartbeats, non-objects: each one bad event."""
    out = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["task", "heartbeat", "not an object"]))
        if kind == "task":
            index = draw(st.integers(0, len(good) - 1))
            # The run's id, filled in by the test (unless the broken field is the id itself).
            event = {**draw(st.sampled_from(good[index])), "uuid": f"@run{index}"}
            field, value = draw(BROKEN_TASK_FIELDS)
            event[field] = value
        elif kind == "heartbeat":
            event = {
                "type": "worker-heartbeat",
                "hostname": "fuzz@test",
                "timestamp": time.time(),
                "freq": 2.0,
            }
            event.update(draw(BROKEN_HEARTBEATS))
        else:
            event = draw(NOT_OBJECTS)
        out.append(event)
    return out


@st.composite
def examples(draw):
    good = draw(runs())
    bad = draw(bad_events(good))
    undecodable = draw(st.lists(UNDECODABLE, max_size=2))
    # Messages of one to five events each, good and bad mixed, in a generated order.
    items = [("good", i, j) for i in range(len(good)) for j in range(4)] + [
        ("bad", k) for k in range(len(bad))
    ]
    order = draw(st.permutations(items))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(order) - 1)), max_size=6, unique=True)))
    return good, bad, undecodable, order, cuts


def total_bad() -> int:
    return sum(
        sum((state or {}).values()) for state in RecorderState.objects.values_list("bad_events", flat=True)
    )


def expected_rows(events_by_task):
    rows = {}
    for task_id, events in events_by_task.items():
        facts = [merge.fact_from_event(check(e)[0]) for e in events]
        rows[task_id] = merge.fold(None, facts)
    return rows


@pytest.fixture
def recorder_proc(start_recorder):
    proc = start_recorder()
    wait_applied("default")
    return proc


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(example=examples())
def test_generated_events_never_stop_the_recorder_and_good_runs_are_exact(recorder_proc, example):
    good, bad, undecodable, order, cuts = example
    pid = recorder_proc.pid
    token = uuid.uuid4().hex[:12]
    by_task: dict[str, list[dict]] = {}
    for i, run in enumerate(good):
        task_id = f"{token}-{i}"
        by_task[task_id] = [{**e, "uuid": task_id} for e in run]
        by_task[task_id][0]["name"] = f"fuzz.{token}.{run[0]['name']}"  # rollups of this example only
    bad = [
        {**e, "uuid": f"{token}-{e['uuid'][4:]}"}
        if isinstance(e, dict) and isinstance(e.get("uuid"), str) and e["uuid"].startswith("@run")
        else e
        for e in bad
    ]
    flat = [by_task[f"{token}-{item[1]}"][item[2]] if item[0] == "good" else bad[item[1]] for item in order]
    before = total_bad()

    bodies, start = [], 0
    for cut in [*cuts, len(flat)]:
        if flat[start:cut]:
            bodies.append(flat[start:cut])
        start = cut
    publish_events(bodies)
    for body, content_type in undecodable:
        publish_raw(body, content_type)
    wait_applied("default")

    expected = expected_rows(by_task)
    fields = ("state", "name", "queue", "routing_key", "args", "kwargs", "worker", "result", "exception")
    recorded = {r["task_id"]: r for r in TaskRun.objects.filter(task_id__in=list(by_task)).values()}
    assert set(recorded) == set(expected)
    for task_id, row in expected.items():
        assert {f: recorded[task_id][f] for f in fields} == {f: row[f] for f in fields}, task_id
        assert recorded[task_id]["retries"] == row["retries"]
        assert recorded[task_id]["runtime"] == row["runtime"]
    finished = Counter((row["name"], row["queue"]) for row in expected.values())
    rolled = Counter()
    for r in TaskRollup.objects.filter(name__startswith=f"fuzz.{token}."):
        rolled[(r.name, r.queue)] += r.succeeded + r.failed
    assert rolled == finished
    counted = len(bad) + len(undecodable)
    wait_for(lambda: total_bad() - before == counted, 30, f"{counted} bad events counted")
    assert recorder_proc.alive() and recorder_proc.pid == pid
    assert RecorderState.objects.get(name="default").pid == pid
