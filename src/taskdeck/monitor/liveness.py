"""LOST and STUCK runs, found by the recorder's tick in the database.

Everything is read from the run and worker rows, never from raw events, so it
holds whichever way runs and workers are recorded, and across hosts: the
dashboard, the API and ``/metrics`` only read the state this writes.

* **LOST**: a run RECEIVED or STARTED on a worker whose row is offline (it
  missed ``HEARTBEAT_MISSES`` heartbeats, or said ``worker-offline``). The
  row keeps when it was found (``lost_at``), on which worker
  (``lost_worker``), and when the broker gives the message to a worker again
  (``redeliver_at``: at the ``worker-offline`` of a warm shutdown, which gives
  its messages back; else from :meth:`taskdeck.brokers.Broker.redelivery_at`;
  none for a run that STARTED under early acknowledgement, its message gone).
* **STUCK**: a run SENT and not received ``STUCK_AFTER`` seconds after it was
  sent, or ``STUCK_NO_CONSUMER_AFTER`` seconds after it was sent to a queue
  that no online worker consumes (known from ``inspect active_queues``, or
  RabbitMQ's consumer count in the newest queue sample; the grace lets a
  restarting worker come back); ``stuck_at`` and ``stuck_reason`` say when
  and why.

Both are left by the merge (:mod:`taskdeck.monitor.merge`) at the run's next
fact: the redelivered message's RECEIVED or STARTED, or a final state.
``lost_*`` and ``stuck_*`` stay, so a run's page shows it was lost or stuck
once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Left
from django.utils import timezone

from taskdeck.brokers import Broker
from taskdeck.models import QueueSample, TaskRun, TaskState, Worker
from taskdeck.monitor.runs import lock_writers
from taskdeck.monitor.subscribers import Every, Subscriber

logger = logging.getLogger("taskdeck.monitor")

#: Runs marked LOST per tick at most (each needs its redelivery time worked out).
LOST_BATCH = 1000
#: A queue sample older than this says nothing about a queue's consumers now.
SAMPLE_FRESH = dt.timedelta(minutes=1)


class Liveness(Subscriber):
    """Marks runs LOST and STUCK every ``interval`` seconds (see the module's docstring).

    ``acks_late(task_name)``: whether that task's message is acknowledged
    after it ran; ``options``: the app's ``broker_transport_options``.
    """

    name = "liveness"

    def __init__(
        self,
        *,
        broker: Broker,
        options: dict[str, Any],
        acks_late: Callable[[str], bool],
        stuck_after: float | None,
        no_consumer_after: float,
        interval: float,
        using: str = "default",
    ) -> None:
        self.broker = broker
        self.options = options
        self.acks_late = acks_late
        self.stuck_after = stuck_after
        self.no_consumer_after = no_consumer_after
        self.every = Every(interval)
        self.using = using

    def on_tick(self, now: float) -> None:
        if self.every.due(now):
            self.check(now)

    def check(self, now: float) -> dict[str, int]:
        """Mark what is LOST and STUCK now; how many runs each."""
        with transaction.atomic(using=self.using):
            # Serialised with every batch of every recorder: a run's row is read and
            # written whole, never between another writer's read and write.
            lock_writers(self.using)
            found = {"lost": self.mark_lost(now), "stuck": self.mark_stuck(now)}
        if any(found.values()):
            logger.info("runs newly lost: %(lost)d, newly stuck: %(stuck)d", found)
        return found

    def mark_lost(self, now: float) -> int:
        offline = Worker.objects.using(self.using).filter(online=False)
        runs = list(
            TaskRun.objects.using(self.using)
            .filter(state__in=[TaskState.RECEIVED, TaskState.STARTED], worker__in=offline.values("hostname"))
            .only("id", "name", "state", "worker", "received_at", "state_at", "lost_at", "redeliver_at")
            .order_by("id")[:LOST_BATCH]
        )
        if not runs:
            return 0
        rows = offline.filter(hostname__in={r.worker for r in runs})
        gone = {
            hostname: (last.timestamp() if last else now, shut_down)
            for hostname, last, shut_down in rows.values_list("hostname", "last_heartbeat", "shut_down")
        }
        found_at = dt.datetime.fromtimestamp(now, dt.UTC)
        for run in runs:
            last, shut_down = gone.get(run.worker, (now, False))
            run.redeliver_at = self.redelivery(run, last, shut_down)
            run.lost_worker, run.lost_at, run.state = run.worker, found_at, TaskState.LOST
            run.updated_at = timezone.now()
        TaskRun.objects.using(self.using).bulk_update(
            runs, ["state", "lost_at", "lost_worker", "redeliver_at", "updated_at"]
        )
        return len(runs)

    def redelivery(self, run: TaskRun, worker_gone: float, shut_down: bool = False) -> dt.datetime | None:
        """When the broker delivers ``run``'s message again; None if it never will."""
        if run.state == TaskState.STARTED and not self.acks_late(run.name):
            return None  # acknowledged when it started: the broker holds nothing of it
        if shut_down:
            # A warm shutdown closes the connection cleanly: RabbitMQ requeues what the
            # worker held, kombu's Redis transport puts it back on its queues, at once.
            return dt.datetime.fromtimestamp(worker_gone, dt.UTC)
        reserved = run.received_at.timestamp() if run.received_at else run.state_at
        if run.lost_at is not None and run.redeliver_at is not None:
            # Lost before: this attempt's message was taken after the last redelivery
            # (received_at keeps the first attempt's time).
            reserved = max(reserved, run.redeliver_at.timestamp())
        at = self.broker.redelivery_at(reserved, worker_gone, self.options)
        return None if at is None else dt.datetime.fromtimestamp(at, dt.UTC)

    def mark_stuck(self, now: float) -> int:
        found_at = dt.datetime.fromtimestamp(now, dt.UTC)
        sent = TaskRun.objects.using(self.using).filter(state=TaskState.SENT)
        marked = 0
        consumed = self.consumed_queues(found_at)
        if consumed is not None:
            waited = found_at - dt.timedelta(seconds=float(self.no_consumer_after))
            marked += (
                sent.filter(sent_at__lt=waited)
                .exclude(queue="")
                .exclude(queue__in=consumed)
                .update(
                    state=TaskState.STUCK,
                    stuck_at=found_at,
                    stuck_reason=Left(Concat(Value("no online worker consumes queue "), F("queue")), 255),
                    updated_at=timezone.now(),
                )
            )
        if self.stuck_after is not None:
            after = float(self.stuck_after)
            marked += sent.filter(sent_at__lt=found_at - dt.timedelta(seconds=after)).update(
                state=TaskState.STUCK,
                stuck_at=found_at,
                stuck_reason=f"not received {after:g} s after it was sent",
                updated_at=timezone.now(),
            )
        return marked

    def consumed_queues(self, now: dt.datetime) -> set[str] | None:
        """Queues some online worker consumes; None while that is not known (a new worker not asked yet)."""
        consumed = Worker.objects.using(self.using).consumed_queues()
        if consumed is None:
            return None
        samples = QueueSample.objects.using(self.using).filter(sampled_at__gte=now - SAMPLE_FRESH)
        # RabbitMQ counts a queue's consumers itself, whatever the monitor knows of workers.
        return consumed | {s.queue for s in samples.latest_per_queue() if s.consumers}


def acks_late_of(app: Any) -> Callable[[str], bool]:
    """``acks_late(task_name)``: the task's own option where ``app`` has it registered, else the app's."""
    default = bool(app.conf.task_acks_late)

    def acks_late(name: str) -> bool:
        task = app.tasks.get(name) if name else None
        value = getattr(task, "acks_late", None)
        return default if value is None else bool(value)

    return acks_late
