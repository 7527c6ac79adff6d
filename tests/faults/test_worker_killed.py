"""A worker killed with SIGKILL in the middle of tasks: every task completes at least once.

The project's settings (``CELERY_TASK_ACKS_LATE``, ``CELERY_TASK_REJECT_ON_WORKER_LOST``)
acknowledge a message only after its task ran. Two kinds of death:

- a pool process killed mid-task: the worker sees it lost and puts the
  message back at once (``reject_on_worker_lost``);
- the whole worker killed (main process and pool, as when a host or a
  container dies): its unacknowledged messages stay in Redis and are
  delivered again to another worker after the visibility timeout.

The control run shows what these settings prevent: with early
acknowledgement the same whole-worker kill loses the tasks it was running.
"""

from __future__ import annotations

import os
import signal
import time

import redis
from celery import current_app
from django_celery_results.models import TaskResult

from tests.faults.harness import all_busy, broker_state, busy, depth, drained, losses, report, settle
from tests.faults.worker_settings import VISIBILITY_TIMEOUT
from tests.support.ledger import work
from tests.support.services import wait_for

TASKS = 1000
#: 1,000 tasks of 50 ms on 2 processes: 25 s of work, far more than the kills take.
TASK_MS = 50
#: Progress (completed tasks) before the first kill; then three pool processes are
#: killed one after the other, each as soon as the worker has seen the last one die,
#: then the whole worker. No further thresholds: how fast billiard replaces a process
#: (on a timer of seconds) varies between machines.
FIRST_KILL_AT = 150
POOL_KILLS = 3
#: What a worker logs when it reaps a pool process killed with SIGKILL.
DEATH = "exited with 'signal 9 (SIGKILL)'"


def send(n: int, ms: int) -> list[str]:
    with current_app.producer_or_acquire() as producer:
        return [work.apply_async((i, ms), producer=producer).id for i in range(n)]


def test_sigkill_in_the_middle_of_tasks_loses_none_of_1000(broker, ledger, workers, recorders):
    client = redis.Redis.from_url(broker)
    recorders()  # the shipped default on Redis: it writes the result rows from the records
    first = workers(concurrency=2, name="doomed")
    ids = send(TASKS, TASK_MS)

    killed: list[int] = []
    wait_for(lambda: ledger.done_count() >= FIRST_KILL_AT, 120, f"{FIRST_KILL_AT} tasks done")
    for _ in range(POOL_KILLS):
        # A live process, not one killed before, inside a task.
        victim = wait_for(
            lambda: busy([pid for pid in first.pool() if pid not in killed]),
            60,
            "a pool process in the middle of a task",
        )
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        deaths = len(killed)
        wait_for(lambda n=deaths: first.output().count(DEATH) >= n, 60, "the worker to see the death")
    pool_kills = len(killed)
    assert ledger.done_count() < TASKS - 100, "tasks left for the whole-worker kill to interrupt"
    wait_for(lambda: client.hlen("unacked") >= 1, 60, "the worker holding messages")
    first.kill_group(signal.SIGKILL)  # main process and pool at once: nothing is acknowledged
    first.popen.wait(30)
    held = int(client.hlen("unacked"))  # what the dead worker had taken and not acknowledged
    done_at_kill = ledger.done_count()

    second = workers(concurrency=2, name="heir")
    # Drained: every message acknowledged, not only every task recorded done (a task's
    # acknowledgement follows its completion by a moment, with late acks).
    ended = settle(lambda: drained(client), 180)
    tally = ledger.tally(ids, limit=None)
    tally.pop("unknown")
    lost = losses(tally.pop("lost_ids"), first, second)
    stored = TaskResult.objects.filter(task_id__in=ids, status="SUCCESS")
    settle(lambda: stored.count() >= TASKS - lost["lost_in_transit"], 120)  # the recorder's lag
    results = stored.count()
    log = first.output()
    counts = {
        **tally,
        **lost,
        "results_success": results,
        "pool_processes_killed": pool_kills,
        "pool_process_deaths_seen_by_worker": log.count(DEATH),
        "tasks_lost_mid_run_and_requeued": log.count("Task handler raised error: WorkerLostError"),
        "whole_worker_killed_after": done_at_kill,
        "unacked_held_by_killed_worker": held,
        "visibility_timeout_s": VISIBILITY_TIMEOUT,
        "executions_on_second_worker": sum(1 for r in ledger.done() if r["host"] == second.hostname),
        "broker_at_end": broker_state(client),
    }
    report("worker-sigkill", counts)

    # Every task a worker had received completed; the one whole-worker kill can at
    # most lose the message its BRPOP reply was carrying (see harness.losses).
    assert lost["lost_after_receipt"] == 0, counts
    assert lost["lost_in_transit"] <= 1, counts
    assert ended and drained(client), counts["broker_at_end"]
    assert results == TASKS - lost["lost_in_transit"], "every task that ran has its SUCCESS row"
    # The test did kill tasks in flight: the worker saw pool processes die
    # mid-task, and the killed worker held unacknowledged messages.
    assert counts["pool_process_deaths_seen_by_worker"] >= pool_kills
    assert counts["tasks_lost_mid_run_and_requeued"] >= 1
    assert held >= 1
    assert second.alive()


def test_control_early_acknowledgement_loses_the_tasks_a_killed_worker_ran(broker, ledger, workers):
    """Without acks_late the same kill loses tasks: the measurement above can see a loss.

    Four 3-second tasks on two processes: the kill waits until both processes
    have been inside their first task for a second (long enough for the early
    acknowledgement to have reached Redis, with two seconds of the task left),
    so it lands mid-task whatever the machine's load.
    """
    client = redis.Redis.from_url(broker)
    early = {"TASKDECK_FAULTS_ACKS_LATE": "0"}
    first = workers(env=early, concurrency=2, name="early")
    ids = send(4, 3000)

    wait_for(lambda: all_busy(first.pool()), 60, "both pool processes inside a task")
    time.sleep(1)
    assert all_busy(first.pool()) and ledger.done_count() == 0, "the first two tasks are still running"
    first.kill_group(signal.SIGKILL)
    first.popen.wait(30)
    workers(env=early, concurrency=2, name="early-heir")
    wait_for(lambda: depth(client, "default") == 0 and client.hlen("unacked") == 0, 120, "queue drained")
    wait_for(lambda: ledger.tally(ids)["completed"] >= 2, 60, "the tasks the dead worker had only reserved")
    time.sleep(1)  # nothing else is coming: a lost task stays lost
    tally = ledger.tally(ids)
    report("worker-sigkill-control-early-ack", {**tally, "visibility_timeout_s": VISIBILITY_TIMEOUT})
    assert tally["lost"] == 2, "with early acknowledgement the two tasks running at the kill are lost"
    assert tally["completed"] == 2, "the two it had only reserved were redelivered"
