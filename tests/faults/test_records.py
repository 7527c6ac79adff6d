"""One record per task run (``taskdeck.results.record``): a worker SIGKILL, a recorder kill, a broker crash.

Every run that completed has its ``TaskResult`` row, its ``TaskRun`` row
(written from its record, never rebuilt from the results table) and is
counted exactly once in the rollups, whatever was killed: a record is in the
stream before its message is acknowledged, and leaves the stream only after
the recorder's transaction that wrote it committed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from typing import Any

import pytest
import redis
from celery import current_app
from django.db import connection
from django_celery_results.models import TaskResult

from bench.capacity import expected, host_name, store_run
from taskdeck.models import DeadLetter, RecorderState, TaskRollup, TaskRun, TaskTotal
from taskdeck.monitor.records import GROUP
from taskdeck.monitor.runs import WRITERS_LOCK
from taskdeck.results import RECORD, record
from taskdeck.results.record import RecordBackend
from tests.faults.harness import broker_state, busy, drained, kept_running, losses, report, settle
from tests.support import rollups
from tests.support.ledger import work
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ENV = {"CELERY_BACKEND": RECORD}
STREAM = "taskdeck:results:records"
NAME = "tests.support.ledger.work"


def send(n: int, ms: int, start: int = 0) -> list[str]:
    with current_app.producer_or_acquire() as producer:
        return [work.apply_async((i, ms), producer=producer).id for i in range(start, start + n)]


def backlog(client: redis.Redis) -> dict[str, int]:
    """Records in the stream, and those read by a recorder and not acknowledged."""
    try:
        pending = client.xpending(STREAM, GROUP)["pending"]
    except redis.ResponseError:  # no group yet
        pending = 0
    return {"in_stream": int(client.xlen(STREAM)), "read_not_acked": int(pending)}


def written(ids: list[str], done: set[str]) -> dict[str, int]:
    """How many of the completed runs have their rows, and how often the rollups count them."""
    return {
        "completed": len(done),
        "result_rows": TaskResult.objects.filter(task_id__in=ids, status="SUCCESS").count(),
        "runs": TaskRun.objects.filter(task_id__in=ids, state="SUCCESS").count(),
        "runs_reconstructed": TaskRun.objects.filter(task_id__in=ids, reconstructed=True).count(),
        "rollup_succeeded": sum(r.succeeded for r in TaskRollup.objects.filter(name=NAME)),
    }


def everything_written(ids: list[str], done: set[str]) -> bool:
    counts = written(ids, done)
    return counts["result_rows"] == counts["runs"] == counts["rollup_succeeded"] == len(done) == len(ids)


@pytest.mark.timeout(600)  # the waits below, each bounded, add up to more than the default 300 s
def test_worker_sigkill_and_recorder_kill_lose_no_record(broker, ledger, workers, recorders):
    client = redis.Redis.from_url(broker)
    first = workers(env=ENV, concurrency=2, name="doomed")
    recorder = recorders(env=ENV)
    ids = send(800, 40)  # 16 s of work on 2 processes: longer than the kills take
    wait_for(lambda: ledger.done_count() >= 150, 120, "150 tasks done")
    wait_for(lambda: busy(first.pool()), 60, "a pool process in the middle of a task")
    first.kill_group(signal.SIGKILL)  # main process and pool: nothing acknowledged after this
    first.popen.wait(30)
    at_worker_kill = {"done": ledger.done_count(), **broker_state(client), **backlog(client)}
    workers(env=ENV, concurrency=2, name="heir")

    wait_for(lambda: ledger.done_count() >= 300, 120, "300 tasks done")
    recorder.kill_group(signal.SIGKILL)  # maybe mid-batch: read, not acknowledged
    recorder.popen.wait(30)
    at_recorder_kill = {"done": ledger.done_count(), **backlog(client)}
    wait_for(lambda: ledger.done_count() >= 450, 120, "450 tasks done while no recorder ran")
    while_down = backlog(client)
    restarted = time.monotonic()
    recorders(env=ENV)  # the same consumer name: its pending records first, then the rest

    ended = settle(lambda: drained(client), 180)
    tally = ledger.tally(ids, limit=None)
    done = {r["id"] for r in ledger.done()} & set(ids)
    caught_up = settle(lambda: everything_written(ids, done), 180)
    counts = {
        **{k: v for k, v in tally.items() if k != "lost_ids"},
        **losses(tally["lost_ids"], first),
        "at_worker_kill": at_worker_kill,
        "at_recorder_kill": at_recorder_kill,
        "backlog_while_recorder_down": while_down,
        "catch_up_s": round(time.monotonic() - restarted, 1),
        **written(ids, done),
        "left_in_stream": backlog(client),
        "broker_at_end": broker_state(client),
    }
    report("records-kills", counts)
    assert ended and tally["lost"] == 0, counts
    assert caught_up, counts
    assert counts["runs_reconstructed"] == 0, "every run came from its record"
    assert counts["left_in_stream"] == {"in_stream": 0, "read_not_acked": 0}, counts
    # What /metrics says the stream holds (taskdeck_recorder_backlog), from the recorder's heartbeat.
    state = RecorderState.objects.filter(name="default")
    wait_for(lambda: state.filter(backlog=0).exists(), 30, "the recorder to report an empty stream")


def test_broker_crash_loses_no_record(ledger, workers, recorders, redis_servers):
    """The stream is in the broker's Redis: a record is appended before its ack, in one append-only file."""
    server = redis_servers("broker")
    env = {**ENV, "CELERY_BROKER": server.url}
    from tests.faults.harness import publishing_to

    with publishing_to(server.url):
        started = [workers(env=env, concurrency=2, name="survivor")]
        revive = kept_running(started, workers, "survivor", env=env, concurrency=2)
        recorders(env=env)
        ids = send(400, 5)
        wait_for(lambda: ledger.done_count() >= 120, 120, "120 tasks done")
        before = backlog(server.client())
        server.stop(signal.SIGKILL)  # a crash: what Redis had not yet written to its file is gone
        time.sleep(2)
        server.start()
        time.sleep(3)  # a worker reconnects within a second or two, or is exiting
        revive()

        client = server.client()
        ended = settle(lambda: revive() or ledger.tally(ids)["lost"] == 0 or drained(client), 240)
        tally = ledger.tally(ids, limit=None)
        done = {r["id"] for r in ledger.done()} & set(ids)
        lost = losses(tally["lost_ids"], *started, unwritten=server.unwritten(tally["lost_ids"]))
        # A run of a message Redis never wrote to its file, done before the crash: its record
        # went with the message (nothing brings it back to run again); maybe the recorder
        # had read it first. Every other completed run must have its rows.
        kept = done - server.unwritten(sorted(done))

        def rows_for_kept() -> bool:
            return TaskResult.objects.filter(task_id__in=kept, status="SUCCESS").count() == len(
                kept
            ) and TaskRun.objects.filter(task_id__in=kept, state="SUCCESS").count() == len(kept)

        caught_up = settle(rows_for_kept, 180)
        counts = {
            **{k: v for k, v in tally.items() if k != "lost_ids"},
            **lost,
            "completed_unwritten": len(done - kept),
            "backlog_before_crash": before,
            "worker_exits": len(started) - 1,
            **written(ids, done),
            "left_in_stream": backlog(client),
        }
        report("records-broker-crash", counts)
    assert ended, counts
    # As for any task on this broker (test_broker_restart): at most the message in flight, besides
    # publishes Redis had not written to its file when it crashed (a busy disk holds them back).
    assert counts["lost_after_receipt"] == 0 and counts["lost_in_transit"] <= 1, counts
    assert caught_up, counts
    assert counts["rollup_succeeded"] == counts["runs"], "each recorded run counted once"


# --- two recorders on one stream ---------------------------------------------------

HOSTS = [host_name(k) for k in range(3)]


def store(backend: RecordBackend, first: int, count: int) -> None:
    """Runs ``first`` to ``first + count`` of every host, written as its worker processes write them."""
    for i in range(first, first + count):
        for host in HOSTS:
            store_run(backend, host, i)


def consumers(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Each consumer of the group: records it read and has not acknowledged."""
    return {
        c["name"].decode() if isinstance(c["name"], bytes) else c["name"]: {"pending": int(c["pending"])}
        for c in client.xinfo_consumers(STREAM, GROUP)
    }


def emptied(client: redis.Redis) -> bool:
    return backlog(client) == {"in_stream": 0, "read_not_acked": 0}


def as_recorded(upto: int) -> dict[str, Any]:
    """What the tables hold of runs 0 to ``upto`` of every host, next to what the input makes them."""
    runs = [expected(host, i) for host in HOSTS for i in range(upto)]
    ids = [r["task_id"] for r in runs]
    want: dict[str, Any] = {"runs": {}, "rollups": Counter(), "totals": Counter()}
    for r in runs:
        want["runs"][r["task_id"]] = (r["state"], r["name"], r["queue"], r["worker"], r["retries"])
        column = {"SUCCESS": "succeeded", "FAILURE": "failed"}[r["state"]]
        want["rollups"][(r["name"], r["queue"], column)] += 1
        want["rollups"][(r["name"], r["queue"], "retried")] += r["retries"]
        want["totals"][(r["name"], r["queue"], r["state"])] += 1
    got: dict[str, Any] = {"rollups": Counter(), "totals": Counter()}
    got["runs"] = {
        r.task_id: (r.state, r.name, r.queue, r.worker, r.retries)
        for r in TaskRun.objects.filter(name__startswith="capacity.")
    }
    got["results"] = {
        r.task_id: (r.status, r.task_name, r.worker)
        for r in TaskResult.objects.filter(task_name__startswith="capacity.")
    }
    want["results"] = {i: (s, n, w) for i, (s, n, _, w, _) in want["runs"].items()}
    for row in TaskRollup.objects.filter(name__startswith="capacity."):
        for column in ("succeeded", "failed", "retried"):
            if getattr(row, column):
                got["rollups"][(row.name, row.queue, column)] += getattr(row, column)
    for total in TaskTotal.objects.filter(name__startswith="capacity."):
        got["totals"][(total.name, total.queue, total.state)] += total.count
    return {"got": got, "want": want, "ids": ids}


def assert_recorded_once(upto: int) -> None:
    tables = as_recorded(upto)
    got, want = tables["got"], tables["want"]
    assert len(got["runs"]) == len(want["runs"]) and got["runs"] == want["runs"], "each run, as stored"
    assert got["results"] == want["results"], "each TaskResult row, final state"
    assert got["rollups"] == want["rollups"], "each run counted once in the minute rollups"
    assert got["totals"] == want["totals"], "and in the totals"
    assert not TaskRun.objects.filter(reconstructed=True).exists(), "every run came from its records"
    assert not DeadLetter.objects.exists()
    rollups.assert_coarse_rows_add_up()


def freeze_between_transactions(proc: Any, cursor: Any) -> None:
    """SIGSTOP ``proc`` at a moment no other session of the test database is in a transaction.

    A recorder frozen inside one would hold its locks, and the other recorder could wait on them
    forever instead of reading.
    """
    busy_sessions = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND state <> 'idle'"
    )
    deadline = time.monotonic() + 60
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        cursor.execute(busy_sessions)
        if cursor.fetchone()[0] == 0:
            return
        os.kill(proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the recorders were never both between transactions"
        time.sleep(0.05)


@pytest.mark.timeout(600)
def test_two_recorders_share_the_stream_and_one_killed_loses_nothing(start_recorder, broker, monkeypatch):
    """Records of 7,500 runs (retried, failed, four task names, three queues, three worker hosts)
    through two recorders at once: every row once, whichever recorder wrote it; then one recorder
    SIGKILLed while it holds records read and not acknowledged: the other claims them
    (``XAUTOCLAIM`` after ``MONITOR["RECORD_CLAIM_AFTER"]``); then records sent a second time change nothing.
    Control: with ``RecordSource.claim`` claiming nothing, the batch b held stayed pending."""
    client = redis.Redis.from_url(broker)
    backend = RecordBackend(app=current_app)
    store(backend, 0, 200)  # before any recorder runs: they wait in the stream
    sent_before = client.xrange(STREAM)
    assert len(sent_before) == sum(expected(h, i)["records"] for h in HOSTS for i in range(200))

    # A killed recorder's records are claimed after RECORD_CLAIM_AFTER: 6 s here, 60 by default.
    quick = {**ENV, "DJANGO_SETTINGS_MODULE": "tests.support.quick_claim_settings"}
    recorders = [start_recorder("a", env=quick), start_recorder("b", env=quick)]
    b = recorders[1]
    store(backend, 200, 800)
    assert settle(lambda: emptied(client), 240), backlog(client)
    written_by = {s.name: s.events for s in RecorderState.objects.filter(name__in=["a", "b"])}
    assert written_by["a"] > 0 and written_by["b"] > 0, written_by  # both took part
    assert_recorded_once(1000)

    # b killed while it holds a batch it read and has not acknowledged. The test holds the writers'
    # lock (taken first in every batch's transaction), so b, having read a batch, waits on it with
    # the batch pending; a is frozen meanwhile, and then claims what b held. The records arrive in
    # one transaction, so that a read waiting for them is served a full batch, not the first one.
    a = recorders[0]
    me = f"b@{socket.gethostname()}"
    with monkeypatch.context() as patched:
        patched.setattr(record, "stream_key", lambda: f"{STREAM}:staged")
        store(backend, 1000, 1500)
    staged = client.xrange(f"{STREAM}:staged")
    client.delete(f"{STREAM}:staged")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [WRITERS_LOCK])  # once a's batch, if any, ends
        try:
            freeze_between_transactions(a, cursor)
            with client.pipeline(transaction=True) as pipe:
                for _, fields in staged:
                    pipe.xadd(STREAM, fields)
                pipe.execute()
            wait_for(lambda: consumers(client).get(me, {}).get("pending", 0) > 0, 120, "b to read a batch")
            held = consumers(client)[me]["pending"]
            os.kill(b.pid, signal.SIGKILL)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [WRITERS_LOCK])
            os.kill(a.pid, signal.SIGCONT)
    b.popen.wait(30)
    killed = {"held_by_b": held, **backlog(client)}
    # Claimed RECORD_CLAIM_AFTER (6 s) after b's last read, at the next look (every 3 s).
    assert settle(lambda: emptied(client), 60), (killed, backlog(client), consumers(client))
    assert consumers(client)[f"b@{socket.gethostname()}"]["pending"] == 0  # claimed by a
    assert_recorded_once(2500)

    # Records sent again (a reply lost after Redis ran the script; a recorder killed between its
    # commit and its acknowledgement): written again, nothing changes, nothing counted twice.
    before = rollups.snapshot()
    for _, fields in sent_before:
        client.xadd(STREAM, fields)
    assert settle(lambda: emptied(client), 120), backlog(client)
    after = rollups.snapshot()
    assert after == before
    assert_recorded_once(2500)
    report("records-two-recorders", {"killed": killed, "written_by_before_kill": written_by})
