"""One record per task run (``taskdeck.results.record``): a worker SIGKILL, a recorder kill, a broker crash.

Every run that completed has its ``TaskResult`` row, its ``TaskRun`` row
(written from its record, never rebuilt from the results table) and is
counted exactly once in the rollups, whatever was killed: a record is in the
stream before its message is acknowledged, and leaves the stream only after
the recorder's transaction that wrote it committed.
"""

from __future__ import annotations

import signal
import time

import pytest
import redis
from celery import current_app
from django_celery_results.models import TaskResult

from taskdeck.models import TaskRollup, TaskRun
from taskdeck.monitor.records import GROUP
from taskdeck.results import RECORD
from tests.faults.harness import busy, drained, losses, report, settle
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


def test_worker_sigkill_and_recorder_kill_lose_no_record(broker, ledger, workers, recorders):
    client = redis.Redis.from_url(broker)
    first = workers(env=ENV, concurrency=2, name="doomed")
    recorder = recorders(env=ENV)
    ids = send(800, 40)  # 16 s of work on 2 processes: longer than the kills take
    wait_for(lambda: ledger.done_count() >= 150, 120, "150 tasks done")
    wait_for(lambda: busy(first.pool()), 60, "a pool process in the middle of a task")
    first.kill_group(signal.SIGKILL)  # main process and pool: nothing acknowledged after this
    first.popen.wait(30)
    at_worker_kill = {"done": ledger.done_count(), "unacked": int(client.hlen("unacked")), **backlog(client)}
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
    }
    report("records-kills", counts)
    assert ended and tally["lost"] == 0, counts
    assert caught_up, counts
    assert counts["runs_reconstructed"] == 0, "every run came from its record"
    assert counts["left_in_stream"] == {"in_stream": 0, "read_not_acked": 0}, counts


def test_broker_crash_loses_no_record(ledger, workers, recorders, redis_servers):
    """The stream is in the broker's Redis: a record is appended before its ack, in one append-only file."""
    server = redis_servers("broker")
    env = {**ENV, "CELERY_BROKER": server.url}
    from tests.faults.harness import publishing_to

    with publishing_to(server.url):
        started = [workers(env=env, concurrency=2, name="survivor")]
        recorders(env=env)
        ids = send(400, 5)
        wait_for(lambda: ledger.done_count() >= 120, 120, "120 tasks done")
        before = backlog(server.client())
        server.stop(signal.SIGKILL)  # a crash: what Redis had not yet written to its file is gone
        time.sleep(2)
        server.start()
        time.sleep(3)  # a worker reconnects within a second or two, or has exited
        if not started[-1].alive():
            started.append(workers(env=env, concurrency=2, name="survivor-2"))

        client = server.client()
        ended = settle(lambda: ledger.tally(ids)["lost"] == 0 or drained(client), 240)
        tally = ledger.tally(ids, limit=None)
        done = {r["id"] for r in ledger.done()} & set(ids)
        lost = losses(tally["lost_ids"], *started)

        def rows_for_done() -> bool:
            return TaskResult.objects.filter(task_id__in=done, status="SUCCESS").count() == len(
                done
            ) and TaskRun.objects.filter(task_id__in=done, state="SUCCESS").count() == len(done)

        caught_up = settle(rows_for_done, 180)
        counts = {
            **{k: v for k, v in tally.items() if k != "lost_ids"},
            **lost,
            "backlog_before_crash": before,
            "worker_exits": len(started) - 1,
            **written(ids, done),
            "left_in_stream": backlog(client),
        }
        report("records-broker-crash", counts)
    assert ended, counts
    # As for any task on this broker (test_broker_restart): at most the message in flight.
    assert counts["lost_after_receipt"] == 0 and counts["lost_in_transit"] <= 1, counts
    assert caught_up, counts
    assert counts["rollup_succeeded"] == len(done), "each completed run counted once"
