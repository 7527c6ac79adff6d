"""Nothing on the event exchange stops the recorder; a row the database refuses blocks nothing.

The named examples, each of which once stopped (or froze) the recorder on
PostgreSQL:

- ``timestamp: "abc"``, a ``worker-heartbeat`` with ``active: "lots"``,
  ``runtime: "fast"``: raised in ``Recorder.process()``, the recorder exited;
- a task name (queue, routing key, parent/root/group id, hostname) over 255
  characters: ``DataError: value too long``, the same batch retried forever;
- NUL characters and lone surrogates in text: refused by PostgreSQL (or by
  the driver's encoding);
- a message that does not decode, a body that is not an object, a clock
  that is not a number: raised in Celery's receiver, the capture loop
  reconnected and dropped what was published meanwhile.

Each is now counted (``taskdeck_recorder_bad_events_total{reason}``), skipped
or cut to fit, and the good events around it are recorded. The first tests
drive a recorder in this process (its batches, the real database); the last
runs the real recorder process on the real event exchange.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from taskdeck import conf, deadletter
from taskdeck.metrics import render
from taskdeck.models import DeadLetter, RecorderState, TaskRollup, TaskRun, Worker
from taskdeck.monitor.recorder import Recorder
from taskdeck.monitor.rollups import Rollups, Totals
from taskdeck.monitor.runs import RunWriter
from taskdeck.monitor.workers import Workers
from tests.support.events import Refuser, publish_events, publish_raw, run_events
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

NOW = 1795564800.0


@pytest.fixture
def recorder():
    return Recorder(
        source=None,
        runs=RunWriter(),
        subscribers=[Workers(), Rollups(), Totals([1, 10]), Refuser()],
        results=None,
        settings=conf.monitor(),
        dead_letter=deadletter.store,
    )


def bad_counts(recorder):
    recorder.save_bad_events()
    state = RecorderState.objects.filter(name="default").first()
    return state.bad_events if state else {}


def states():
    return dict(TaskRun.objects.values_list("task_id", "state"))


def test_timestamp_abc_is_counted_and_skipped(recorder):
    events = run_events("t-1", "orders.tasks.ok", NOW)
    junk = {"type": "task-started", "uuid": "t-1", "hostname": "w@h", "timestamp": "abc"}
    recorder.process([*events[:2], junk, *events[2:]])
    assert states() == {"t-1": "SUCCESS"}
    assert bad_counts(recorder) == {"timestamp": 1}
    assert 'taskdeck_recorder_bad_events_total{reason="timestamp"} 1.0' in render().decode()
    (letter,) = DeadLetter.objects.all()  # the first of each reason per minute is kept
    assert (letter.kind, letter.task_id) == ("event", "t-1")
    assert "bad event (timestamp)" in letter.reason and json.loads(bytes(letter.body)) == junk


def test_heartbeat_with_active_lots_is_counted_and_skipped(recorder):
    beat = {"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "timestamp": NOW}
    recorder.process([{**beat, "active": "lots"}, {**beat, "active": "3", "timestamp": NOW + 2}])
    worker = Worker.objects.get(hostname="w1@h")
    assert (worker.active, worker.online) == (3, True)  # "3" is coerced; "lots" is not a number
    assert bad_counts(recorder) == {"active": 1}


def test_heartbeats_from_the_future_or_years_apart_do_not_keep_a_worker_online(recorder):
    """A heartbeat dated in the year 9999 counts as seen now: the worker's real events after it
    still apply (worker-offline took it offline), and it goes offline once its beats stop; a
    ``freq`` of a year is taken as 300 s (MAX_HEARTBEAT_INTERVAL). Before, the forged date hid
    every later event, and a ghost claiming a year between beats stayed online for three years."""
    from taskdeck.monitor.workers import MAX_HEARTBEAT_INTERVAL

    now = time.time()
    beat = {"type": "worker-heartbeat", "hostname": "victim@h", "freq": 2.0, "timestamp": now}
    recorder.process([{**beat, "timestamp": 253402300799}])
    recorder.process([{**beat, "type": "worker-offline", "timestamp": now + 1}])
    assert Worker.objects.get(hostname="victim@h").online is False
    recorder.process([{**beat, "timestamp": 253402300799}])
    assert Worker.objects.get(hostname="victim@h").online is True
    Worker.objects.expire(time.time() + 3 * 2.0 + 1, 3)  # three beats missed
    assert Worker.objects.get(hostname="victim@h").online is False

    recorder.process([{**beat, "hostname": "ghost@nowhere", "freq": 31_536_000.0}])
    ghost = Worker.objects.get(hostname="ghost@nowhere")
    assert ghost.heartbeat_interval == MAX_HEARTBEAT_INTERVAL
    Worker.objects.expire(time.time() + 3 * MAX_HEARTBEAT_INTERVAL + 1, 3)
    assert Worker.objects.get(hostname="ghost@nowhere").online is False


def test_events_dated_ahead_or_long_ago_leave_the_recorders_mark_true(recorder):
    """A run dated 9999 held ``last_event_at`` in 9999 (reconciliation starts there, and found
    nothing more); a valid run dated 1970 made the lag 56 years (the recorder unhealthy). Both
    runs are recorded; the mark counts the first as now and leaves the second out of the lag."""
    RecorderState.objects.create(name="default")
    recorder.process(run_events("t-ahead", "orders.tasks.ok", 253402300000.0))
    state = RecorderState.objects.get(name="default")
    assert state.last_event_at.timestamp() <= time.time() and state.lag == 0.0
    recorder.process(
        [*run_events("t-1970", "orders.tasks.ok", 1.0), *run_events("t-now", "o.t", time.time())]
    )
    state.refresh_from_db()
    assert 0.0 <= state.lag < 60
    assert states() == {"t-ahead": "SUCCESS", "t-1970": "SUCCESS", "t-now": "SUCCESS"}


def test_runtime_fast_is_counted_and_skipped(recorder):
    events = run_events("t-1", "orders.tasks.ok", NOW)
    recorder.process([*events[:3], {**events[3], "runtime": "fast"}])
    assert states() == {"t-1": "STARTED"}
    recorder.process([events[3]])
    assert states() == {"t-1": "SUCCESS"} and TaskRun.objects.get().runtime == 0.5
    assert bad_counts(recorder) == {"runtime": 1}


def test_fields_over_255_characters_are_cut_to_their_columns(recorder):
    long = {key: key[0] * 300 for key in ("queue", "routing_key", "parent_id", "root_id", "group_id")}
    events = run_events("t-1", "n" * 300, NOW, **long)
    events = [{**e, "hostname": "h" * 300} if "hostname" in e else e for e in events]
    events.append({"type": "worker-online", "hostname": "h" * 300, "timestamp": NOW, "sw_ident": "s" * 300})
    recorder.process(events)
    row = TaskRun.objects.get(task_id="t-1")
    for field in ("name", "queue", "routing_key", "parent_id", "root_id", "group_id", "worker"):
        value = getattr(row, field)
        assert len(value) == 255 and value.endswith("…"), field
    assert row.state == "SUCCESS"
    assert Worker.objects.get().hostname == "h" * 254 + "…"
    assert len(Worker.objects.get().software) == 128
    assert TaskRollup.objects.get().name == "n" * 254 + "…"
    assert bad_counts(recorder) == {}


def test_text_postgresql_refuses_is_escaped(recorder):
    events = run_events("t-1", "orders.tasks.nul\x00", NOW)
    events[3] = {**events[3], "result": "lone \ud800 surrogate and \x00"}
    recorder.process(events)
    row = TaskRun.objects.get(task_id="t-1")
    assert row.name == "orders.tasks.nul\\x00"
    assert row.result == "lone \\ud800 surrogate and \\x00"


def test_a_task_id_over_its_column_is_refused_not_cut(recorder):
    """Cutting ids would merge different tasks into one run: an unusable id is a bad event."""
    recorder.process(
        run_events("i" * 256, "orders.tasks.ok", NOW) + run_events("t-2", "orders.tasks.ok", NOW)
    )
    assert states() == {"t-2": "SUCCESS"}
    assert bad_counts(recorder) == {"uuid": 4}


def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_written(recorder):
    events = []
    for i in range(8):
        events += run_events(f"t-{i}", "refuse.me" if i == 5 else "orders.tasks.ok", NOW + i)
    recorder.process(events)
    # Split until the refused events stood alone: the sent and received events of t-5 (they carry
    # the name); everything else is written, t-5 too, from its started and succeeded events.
    assert states() == {f"t-{i}": "SUCCESS" for i in range(8)}
    assert TaskRun.objects.get(task_id="t-5").name == ""
    letters = DeadLetter.objects.filter(kind="row").order_by("id")
    assert [json.loads(bytes(d.body))["type"] for d in letters] == ["task-sent", "task-received"]
    assert all(d.task_id == "t-5" and "DataError" in d.reason for d in letters)
    assert bad_counts(recorder) == {"row refused": 2}
    assert TaskRollup.objects.get(name="orders.tasks.ok").succeeded == 7


def test_junk_on_the_event_exchange_never_stops_the_recorder(start_recorder):
    proc = start_recorder()
    pid = proc.pid
    now = time.time()
    good = [str(uuid.uuid4()) for _ in range(4)]
    runs = [run_events(task_id, "orders.tasks.ok", now + i) for i, task_id in enumerate(good)]
    publish_events(runs[0])
    publish_raw(b"\x80\x81 not json", "application/json")  # does not decode
    publish_raw(b"\x80\x04K\x01.", "application/x-python-serialize")  # a content type not accepted
    publish_events(
        [
            "hello",
            [1, 2],
            {"no": "type"},
            {"type": "task-received", "uuid": "x", "timestamp": now, "clock": "x"},
        ]
    )
    publish_events([runs[1]])  # a batch, as taskdeck's workers send them
    publish_events(
        [
            {"type": "task-started", "uuid": good[2], "timestamp": "abc"},
            {"type": "worker-heartbeat", "hostname": "w@h", "timestamp": now, "active": "lots"},
            {**runs[2][3], "runtime": "fast"},
            [{"type": "task-sent", "uuid": good[2], "timestamp": now, "utcoffset": "x"}, *runs[2]],
        ]
    )
    publish_events(runs[3])
    wait_for(
        lambda: TaskRun.objects.filter(task_id__in=good, state="SUCCESS").count() == 4, 60, "the good runs"
    )

    def reasons():
        return {k: v for k, v in RecorderState.objects.get(name="default").bad_events.items() if v}

    expected = {
        "undecodable": 2,
        "not an object": 3,
        "type": 1,
        "clock": 1,
        "timestamp": 1,
        "active": 1,
        "runtime": 1,
        "utcoffset": 1,
    }
    wait_for(lambda: reasons() == expected, 30, f"the bad events counted as {expected}")
    assert proc.alive() and proc.pid == pid
    assert RecorderState.objects.get(name="default").pid == pid
    metrics = render().decode()
    assert 'taskdeck_recorder_bad_events_total{reason="undecodable"} 2.0' in metrics
    assert "Traceback" not in proc.output()


def test_inspect_replies_that_make_no_sense_leave_other_workers_alone():
    from taskdeck.monitor.workers import WorkerInspector

    for name in ("good@h", "odd@h", "junk@h"):
        Worker.objects.create(hostname=name, online=True)
    replies = {
        "odd@h": {"pool": {"implementation": "x" * 100 + "\x00", "max-concurrency": "lots"}},
        "junk@h": {"pool": ["not", "a", "mapping"]},
        "good@h": {"pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 4}},
    }
    WorkerInspector(lambda: replies, interval=30).on_tick(NOW)
    rows = {w.hostname: (w.pool, w.concurrency) for w in Worker.objects.all()}
    assert rows["good@h"] == ("prefork", 4)
    assert rows["odd@h"] == ("x" * 63 + "…", None)
    assert rows["junk@h"] == ("", None)
