"""The recorder: Celery events captured on one thread, applied in batches on another.

``EventSource`` runs Celery's event ``Receiver`` on a thread and hands events
over through a bounded queue (when it is full the capture blocks, so memory
stays flat). ``Recorder`` takes a batch, folds its task events into runs
(:class:`~taskdeck.monitor.runs.RunWriter`), then calls each subscriber.
Between batches it reconciles from the results table and ticks the
subscribers. Everything comes in through the constructor; :func:`build`
wires the defaults from settings.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, close_old_connections, connections, reset_queries, transaction
from django.db.models import F

from taskdeck.models import RecorderState
from taskdeck.monitor.merge import fact_from_event
from taskdeck.monitor.reconcile import ResultsSource
from taskdeck.monitor.runs import RunWriter
from taskdeck.monitor.subscribers import Every, Subscriber

logger = logging.getLogger("taskdeck.monitor")


class EventSource:
    """Celery events from the broker, on a capture thread, through a bounded buffer."""

    def __init__(self, app: Any, buffer: int = 20000) -> None:
        self.app = app
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=buffer)
        self._receiver: Any = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._capture, name="taskdeck-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def batch(self, size: int, wait: float) -> list[dict[str, Any]]:
        """Up to ``size`` events, waiting at most ``wait`` seconds for the first one."""
        try:
            events = [self.queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(events) < size:
            try:
                events.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return events

    def _put(self, event: dict[str, Any]) -> None:
        while not self._stopping.is_set():
            try:
                self.queue.put(event, timeout=0.5)
                return
            except queue.Full:
                continue

    def _capture(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    receiver = self.app.events.Receiver(conn, handlers={"*": self._put}, app=self.app)
                    on_ready = receiver.on_consume_ready

                    def consume_ready(*args: Any, on_ready: Any = on_ready, **kwargs: Any) -> None:
                        on_ready(*args, **kwargs)  # asks the workers for a heartbeat now
                        self.ready.set()

                    receiver.on_consume_ready = consume_ready
                    receiver.should_stop = self._stopping.is_set()
                    self._receiver = receiver
                    for _ in receiver.consume(limit=None, timeout=None, wakeup=True):
                        delay = 1.0
            except Exception:
                if self._stopping.is_set():
                    break
                logger.warning("event capture lost the broker; reconnecting in %.0fs", delay, exc_info=True)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)


class Recorder:
    def __init__(
        self,
        *,
        source: EventSource,
        runs: RunWriter,
        subscribers: list[Subscriber],
        results: ResultsSource | None,
        settings: dict[str, Any],
        name: str = "default",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.runs = runs
        self.subscribers = subscribers
        self.results = results
        self.settings = settings
        self.name = name
        self.clock = clock
        self.reconcile_every = Every(settings["RECONCILE_INTERVAL"])
        self.heartbeat_every = Every(1.0)
        self.stopping = threading.Event()

    # --- the loop -----------------------------------------------------------

    def run(self) -> None:
        now = self.clock()
        state, _ = RecorderState.objects.get_or_create(name=self.name)
        last_event_at = state.last_event_at
        RecorderState.objects.filter(pk=state.pk).update(
            pid=os.getpid(), started_at=dt.datetime.fromtimestamp(now, dt.UTC), heartbeat_at=None
        )
        for subscriber in self.subscribers:
            subscriber.on_start(now)
        self.source.start()
        # Runs that finished while no recorder listened; events from now on are captured.
        since = None
        if last_event_at is not None:
            since = last_event_at - dt.timedelta(seconds=self.settings["RECONCILE_MARGIN"])
        self.reconcile(since, None)
        self.reconcile_every.due(now)
        logger.info("recorder %r started (pid %s)", self.name, os.getpid())
        try:
            while not self.stopping.is_set():
                events = self.source.batch(self.settings["BATCH_SIZE"], self.settings["FLUSH_INTERVAL"])
                self._safely(self.process, events)
                self._safely(self.tick, self.clock())
        finally:
            self.source.stop()
            self._safely(self.process, self.source.batch(self.settings["BUFFER"], 0))
            for subscriber in self.subscribers:
                subscriber.on_stop()
            logger.info("recorder %r stopped", self.name)

    def stop(self) -> None:
        self.stopping.set()

    def _safely(self, step: Callable[..., Any], *args: Any) -> None:
        """Run one step; on a database error, reconnect and retry it so no batch is lost."""
        delay = 0.5
        while True:
            try:
                step(*args)
                return
            except DatabaseError:
                if self.stopping.is_set() and delay > 4:
                    logger.error("recorder stopping with an unwritten batch", exc_info=True)
                    return
                logger.warning("database error; retrying in %.1fs", delay, exc_info=True)
                close_old_connections()
                for conn in connections.all():
                    conn.close()
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    # --- one batch ----------------------------------------------------------

    def process(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        limits = (self.settings["REPR_LIMIT"], self.settings["TRACEBACK_LIMIT"])
        facts = [fact for event in events if (fact := fact_from_event(event, *limits)) is not None]
        # One transaction for the runs, what the subscribers derive from them and the
        # recorder's mark: a recorder killed (or a database error) mid-batch leaves none
        # of it, so the runs are rebuilt and counted again, never half counted.
        with transaction.atomic():
            changes = self.runs.apply(facts)
            for subscriber in self.subscribers:
                subscriber.on_events(events)
                subscriber.on_changes(changes)
            now = self.clock()
            stamps = [float(e["timestamp"]) for e in events if e.get("timestamp")]
            if stamps:
                RecorderState.objects.filter(name=self.name).update(
                    events=F("events") + len(events),
                    last_event_at=dt.datetime.fromtimestamp(max(stamps), dt.UTC),
                    lag=max(now - min(stamps), 0.0),
                )
        # With DEBUG on Django keeps the last 9000 queries, each batch's INSERT among
        # them: megabytes that look like a leak. The recorder never needs them.
        reset_queries()

    def tick(self, now: float) -> None:
        if self.reconcile_every.due(now):
            # Leave the newest runs to their events; reconcile what should have arrived.
            margin = dt.timedelta(seconds=self.settings["RECONCILE_MARGIN"])
            until = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(seconds=10)
            self.reconcile(until - margin, until)
        for subscriber in self.subscribers:
            subscriber.on_tick(now)
        if self.source.ready.is_set() and self.heartbeat_every.due(now):
            RecorderState.objects.filter(name=self.name).update(
                heartbeat_at=dt.datetime.fromtimestamp(now, dt.UTC)
            )

    def reconcile(self, since: dt.datetime | None, until: dt.datetime | None) -> int:
        """Fill in runs that finished without the recorder seeing it; returns how many."""
        if self.results is None:
            return 0
        filled = 0
        for facts in self.results.missing(since, until):
            with transaction.atomic():  # as in process(): runs and what derives from them together
                changes = self.runs.apply(facts)
                for subscriber in self.subscribers:
                    subscriber.on_changes(changes)
            filled += len(changes)
        if filled:
            RecorderState.objects.filter(name=self.name).update(reconciled=F("reconciled") + filled)
            logger.info("reconstructed %d runs from the results table", filled)
        return filled


def build(app: Any, settings: dict[str, Any] | None = None, name: str = "default") -> Recorder:
    """A recorder wired from ``TASKDECK["MONITOR"]``: every default subscriber."""
    from taskdeck import brokers, conf
    from taskdeck.monitor.alerts import Alerts, deliveries
    from taskdeck.monitor.retention import Retention
    from taskdeck.monitor.rollups import Rollups, Totals
    from taskdeck.monitor.sampler import QueueSampler, configured_queues
    from taskdeck.monitor.workers import WorkerInspector, Workers

    s = settings or conf.monitor()
    subscribers: list[Subscriber] = [
        Workers(misses=s["HEARTBEAT_MISSES"]),
        WorkerInspector(lambda: app.control.inspect(timeout=1.0).stats(), s["INSPECT_INTERVAL"]),
        Rollups(),
        Totals(s["METRICS_BUCKETS"]),
        QueueSampler(
            brokers.for_url(app.conf.broker_url or ""),
            app.connection_for_read,
            configured_queues(app, s["QUEUES"]),
            s["SAMPLE_INTERVAL"],
            s["RABBITMQ_MANAGEMENT_URL"],
        ),
        Retention(
            runs=s["RUN_RETENTION"],
            rollups=s["ROLLUP_RETENTION"],
            samples=s["SAMPLE_RETENTION"],
            incidents=s["INCIDENT_RETENTION"],
            interval=s["PRUNE_INTERVAL"],
            batch=s["PRUNE_BATCH"],
        ),
    ]
    if s["ALERTS"]:
        subscribers.append(Alerts(s["ALERTS"], deliveries(s), interval=s["ALERT_INTERVAL"], recorder=name))
    return Recorder(
        source=EventSource(app, s["BUFFER"]),
        runs=RunWriter(),
        subscribers=subscribers,
        results=ResultsSource(s["REPR_LIMIT"], s["TRACEBACK_LIMIT"]),
        settings=s,
        name=name,
    )
