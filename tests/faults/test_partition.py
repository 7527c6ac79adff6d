"""Two worker hosts on one broker; one is cut off mid-run; its unacknowledged tasks go to the other.

The second host is a network namespace the test makes (``ip netns``, a veth
pair). The broker is a Redis server of the test's own listening on this
side's veth address; the cut-off host reaches PostgreSQL through a relay on
that address too, and writes its ledger to the same Redis, so taking the link
down cuts it off from everything, as a host whose network fails. Its worker
keeps running, stranded; nothing it does after the cut can be seen.

Redis has no acknowledgement on disconnect: the messages the cut-off worker
had taken stay in the ``unacked`` hash and are given to the other worker once
they are older than the visibility timeout.
"""

from __future__ import annotations

import signal
import time

from celery import current_app

from tests.faults.harness import Relay, all_busy, drained, free_port, losses, publishing_to, report, settle
from tests.faults.worker_settings import VISIBILITY_TIMEOUT
from tests.support.ledger import Ledger, work
from tests.support.services import wait_for

TASKS = 200
TASK_MS = 200
CUT_AT = 60


def test_host_cut_off_mid_run_its_tasks_are_redelivered_to_the_other(
    netns, redis_servers, faults_env, workers, pg
):
    port = free_port()
    server = redis_servers("shared-broker", appendonly=False, bind=(netns.host_ip, port))
    broker = f"redis://{netns.host_ip}:{port}/0"
    ledger = Ledger(f"redis://{netns.host_ip}:{port}/1")
    relay = Relay((netns.host_ip, 0), ("127.0.0.1", 5432))
    relay_port = relay.server.getsockname()[1]
    pg_url = pg.replace("@127.0.0.1:5432/", f"@{netns.host_ip}:{relay_port}/")
    assert pg_url != pg, pg
    env = {"CELERY_BROKER": broker, **ledger.env}
    there = None
    try:
        with publishing_to(broker):
            here = workers(env=env, concurrency=2, name="here")
            there = workers(
                env={**env, "DATABASE_URL": pg_url}, concurrency=2, name="there", netns=netns.name
            )
            with current_app.producer_or_acquire() as producer:
                ids = [work.apply_async((i, TASK_MS), producer=producer).id for i in range(TASKS)]
            wait_for(
                lambda: (
                    ledger.done_count() >= CUT_AT and any(r["host"] == there.hostname for r in ledger.done())
                ),
                120,
                f"{CUT_AT} tasks done, some by the second host",
            )
            # Each worker holds at most 2 (prefetch): with 3 or more taken, the second host holds
            # some; and both its processes are inside a task (200 ms), so the cut lands before
            # their acknowledgement can reach the broker, whatever the machine's load.
            wait_for(
                lambda: server.client().hlen("unacked") >= 3 and all_busy(there.pool()),
                60,
                "both hosts busy",
            )
            netns.cut()
            cut_at = time.monotonic()
            done_there_before_cut = sum(1 for r in ledger.done() if r["host"] == there.hostname)

            client = server.client()
            ended = settle(lambda: ledger.tally(ids)["lost"] == 0 or drained(client), 180)
            records = ledger.done()
            tally = ledger.tally(ids, limit=None)
            tally.pop("unknown")
            lost = losses(tally.pop("lost_ids"), here, there)
            counts = {
                **tally,
                **lost,
                "hosts": 2,
                "cut_after_done": CUT_AT,
                "done_by_cut_off_host_before_cut": done_there_before_cut,
                "done_by_cut_off_host_after_cut": sum(1 for r in records if r["host"] == there.hostname)
                - done_there_before_cut,
                "redelivered_to_other_host": sum(
                    1 for r in records if r["host"] == here.hostname and r["redelivered"]
                ),
                "seconds_from_cut_to_all_done": round(time.monotonic() - cut_at, 1),
                "visibility_timeout_s": VISIBILITY_TIMEOUT,
                "cut_off_worker_still_running": there.alive(),
            }
            report("partition", counts)
    finally:
        if there is not None:  # stranded, it cannot finish its tasks or stop cleanly: the host is gone
            there.kill_group(signal.SIGKILL)
        relay.close()

    assert ended, counts
    # Every task a host had received completed; the cut can at most lose a message in
    # flight to the cut-off host (see harness.losses).
    assert counts["lost_after_receipt"] == 0 and counts["lost_in_transit"] <= 1, counts
    assert counts["done_by_cut_off_host_before_cut"] >= 1
    # What the cut-off host held unacknowledged was delivered again, to the host still connected.
    assert counts["redelivered_to_other_host"] >= 1
    assert counts["done_by_cut_off_host_after_cut"] == 0
