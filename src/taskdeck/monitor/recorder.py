"""The recorder: Celery events captured on one thread, applied in batches on another.

``EventSource`` runs Celery's event ``Receiver`` on a thread and hands events
over through a bounded queue (when it is full the capture blocks, so memory
stays flat). ``Recorder`` takes a batch, folds its task events into runs
(:class:`~taskdeck.monitor.runs.RunWriter`), then calls each subscriber.
Between batches it reconciles from the results table and ticks the
subscribers. Everything comes in through the constructor; :func:`build`
wires the defaults from settings.

With the record backend (:mod:`taskdeck.results.record`) a second source,
:class:`~taskdeck.monitor.records.RecordSource`, carries the task runs; the
loop waits on it and takes the events waiting with each batch of records
(:meth:`Recorder.process_records`: result rows, runs of both and subscribers
in one transaction, then the records acknowledged).

Nothing on the event exchange stops the recorder. A message that does not
decode, an event Celery's receiver cannot read, and an event that fails
:func:`~taskdeck.monitor.validation.check` are counted as bad
(``taskdeck_recorder_bad_events_total{reason}``) and skipped. A batch the
database refuses (``DataError``, ``IntegrityError``, or any error that is
not the database being unreachable) is split in halves until the event
whose row is refused stands alone; that one is dead-lettered (kind
``"row"``) and the rest written. A database that is down or unreachable is
retried with backoff, the batch kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from celery.events.receiver import EventReceiver
from django.db import close_old_connections, connections, reset_queries, transaction
from django.db.models import F

from taskdeck import conf, deadletter
from taskdeck.errors import is_database_outage
from taskdeck.models import RecorderState
from taskdeck.monitor import records as record_rows
from taskdeck.monitor.merge import fact_from_event
from taskdeck.monitor.reconcile import ResultsSource
from taskdeck.monitor.records import Record, RecordSource
from taskdeck.monitor.runs import RunWriter, lock_writers
from taskdeck.monitor.subscribers import Every, Subscriber
from taskdeck.monitor.validation import BadEvents, check

logger = logging.getLogger("taskdeck.monitor")


class SafeReceiver(EventReceiver):
    """Celery's event receiver, except that one bad message or event is counted, never fatal.

    Celery's own receiver lets an undecodable message, or an event its
    clock and time-zone handling cannot read (``clock: "x"``, a body that
    is not an object), raise out of the consumer: the capture loop would
    reconnect, and drop what was published meanwhile.
    """

    def __init__(self, *args: Any, bad: BadEvents, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad = bad

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:  # noqa: N803 (kombu's name)
        return [
            Consumer(
                queues=[self.queue],
                callbacks=[self._receive_each],
                no_ack=True,
                accept=self.accept,
                on_decode_error=self._undecodable,
            )
        ]

    def _receive_each(self, body: Any, message: Any) -> None:
        for event in body if isinstance(body, list) else [body]:
            try:
                self.process(*self.event_from_message(event))
            except Exception as exc:  # noqa: BLE001 - whatever a bad event raises in Celery's code
                _, reason, detail = check(event)
                self.bad.add(reason or "unreadable", event, detail or f"{type(exc).__name__}: {exc}")

    def _undecodable(self, message: Any, exc: Exception) -> None:
        body = message.body if isinstance(message.body, bytes | str) else repr(message.body)
        self.bad.add(
            "undecodable", body[:2000], f"content type {message.content_type!r}: {type(exc).__name__}: {exc}"
        )


def event_queue(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The receiver's queue options on RabbitMQ: durable, one per recorder name, bounded.

    Celery's receiver declares a queue of a random name that goes with its
    consumer, and keeps an event 5 s: a recorder restarting (or busy) lost
    what was sent meanwhile. The name carries a digest of the limits, so a
    recorder restarted with others declares a new queue instead of failing on
    the old one's arguments (which expires unused).
    """
    ttl, expires = settings["EVENT_QUEUE_TTL"], settings["EVENT_QUEUE_EXPIRES"]
    limits = f"{ttl}:{expires}:{settings['EVENT_QUEUE_MAX_BYTES']}"
    digest = hashlib.sha256(limits.encode()).hexdigest()[:8]
    return {
        "node_id": f"taskdeck-recorder.{name}.{digest}",
        "queue_durable": True,
        "queue_exclusive": False,
        "queue_ttl": float(ttl),
        "queue_expires": float(expires),
    }


class EventSource:
    """Celery events from the broker, on a capture thread, through a bounded buffer."""

    def __init__(
        self,
        app: Any,
        buffer: int = 20000,
        bad: BadEvents | None = None,
        name: str = "default",
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.settings = {**conf.MONITOR_DEFAULTS, **(settings or {})}
        self.bad = bad or BadEvents()
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

    def batch(self, size: int, wait: float, linger: float = 0.0) -> list[dict[str, Any]]:
        """Up to ``size`` events, waiting at most ``wait`` seconds for the first one.

        With ``linger``, a batch not yet full takes what arrives until its first
        event has waited ``linger`` seconds.
        """
        try:
            events = [self.queue.get(timeout=wait)]
        except queue.Empty:
            return []
        until = time.monotonic() + linger
        while len(events) < size:
            try:
                events.append(self.queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = until - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                break
            try:
                events.append(self.queue.get(timeout=min(left, 0.1)))
            except queue.Empty:
                continue
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
                    durable = conn.transport.driver_type == "amqp"
                    options = event_queue(self.name, self.settings) if durable else {}
                    receiver = SafeReceiver(
                        conn, handlers={"*": self._put}, app=self.app, bad=self.bad, **options
                    )
                    if durable:
                        receiver.queue.max_length_bytes = int(self.settings["EVENT_QUEUE_MAX_BYTES"])
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
        bad: BadEvents | None = None,
        dead_letter: Callable[..., None] = deadletter.store,
        records: RecordSource | None = None,
    ) -> None:
        self.source = source
        self.records = records
        self.runs = runs
        self.subscribers = subscribers
        self.results = results
        self.settings = settings
        self.name = name
        self.clock = clock
        self.bad = bad or getattr(source, "bad", None) or BadEvents(store=dead_letter)
        self.dead_letter = dead_letter
        self.reconcile_every = Every(settings["RECONCILE_INTERVAL"])
        self.heartbeat_every = Every(1.0)
        self.claim_every = Every((records.claim_idle if records else settings["RECORD_CLAIM_AFTER"]) / 2)
        self.stopping = threading.Event()
        self._next_error_log: dict[str, float] = {}

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
        self._safely(self.reconcile, since, None)
        self.reconcile_every.due(now)
        logger.info("recorder %r started (pid %s)", self.name, os.getpid())
        try:
            while not self.stopping.is_set():
                if self.records is None:
                    size, wait = self.settings["BATCH_SIZE"], self.settings["FLUSH_INTERVAL"]
                    self.process(self.source.batch(size, wait, float(self.settings["EVENT_LINGER"] or 0)))
                else:
                    # Records are the busy source: wait on them, with the events waiting.
                    self.pump_records(self.settings["FLUSH_INTERVAL"])
                self._safely(self.tick, self.clock())
        finally:
            self.source.stop()
            self.process(self.source.batch(self.settings["BUFFER"], 0))
            self._safely(self.save_bad_events)
            for subscriber in self.subscribers:
                subscriber.on_stop()
            logger.info("recorder %r stopped", self.name)

    def stop(self) -> None:
        self.stopping.set()

    def _retrying(self, step: Callable[..., Any], *args: Any) -> bool:
        """Run ``step``; while the database is down, reconnect and run it again, so nothing is lost.

        Any other error is raised. False when the recorder is stopping and gave up.
        """
        delay = 0.5
        while True:
            try:
                step(*args)
                return True
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                if self.stopping.is_set() and delay > 4:
                    logger.error("recorder stopping with an unwritten batch", exc_info=True)
                    return False
                logger.warning("database error; retrying in %.1fs", delay, exc_info=True)
                close_old_connections()
                for conn in connections.all():
                    conn.close()
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _safely(self, step: Callable[..., Any], *args: Any) -> None:
        """:meth:`_retrying`, and any other error logged (once a minute per step), never raised."""
        try:
            self._retrying(step, *args)
        except Exception:  # noqa: BLE001 - a bug or bad data in one step must not stop recording
            self._log_error(getattr(step, "__name__", repr(step)))

    def _log_error(self, what: str) -> None:
        now = time.monotonic()
        if now >= self._next_error_log.get(what, 0.0):
            self._next_error_log[what] = now + 60.0
            logger.exception("recorder step %s failed; carrying on", what)

    # --- one batch ----------------------------------------------------------

    def process(self, events: list[Any]) -> None:
        """Check, then write one batch: bad events counted and skipped, refused rows dead-lettered."""
        if not events:
            return
        clean = self._checked(events)
        if clean:
            self._write_or_split(clean)
        # With DEBUG on Django keeps the last 9000 queries, each batch's INSERT among
        # them: megabytes that look like a leak. The recorder never needs them.
        reset_queries()

    def _checked(self, events: list[Any]) -> list[dict[str, Any]]:
        """The events that pass :func:`check`, as it cleans them; the others counted as bad."""
        clean = []
        for event in events:
            good, reason, detail = check(event)
            if good is None:
                self.bad.add(reason, event, detail)
            else:
                clean.append(good)
        return clean

    def _write_or_split(self, events: list[dict[str, Any]]) -> None:
        try:
            self._retrying(self.write, events)
        except Exception as exc:  # noqa: BLE001 - refused: find the event whose row it is
            if len(events) == 1:
                self._refused(events[0], exc)
                return
            middle = len(events) // 2
            self._write_or_split(events[:middle])
            self._write_or_split(events[middle:])

    def _refused(self, event: dict[str, Any], exc: Exception) -> None:
        reason = f"the database refused the row this event makes: {type(exc).__name__}: {exc}"
        logger.error("%s; event dead-lettered: %.300r", reason, event, exc_info=exc)
        self.bad.count("row refused")
        self.dead_letter(
            "row",
            reason,
            source=f"recorder {self.name}",
            body=json.dumps(event, default=repr),
            task_id=event.get("uuid"),
            task=event.get("name"),
        )

    def write(self, events: list[dict[str, Any]]) -> None:
        """Apply checked events: the runs, what subscribers derive, the recorder's mark."""
        self.write_batch([], events)

    def write_batch(self, records: list[Record], events: list[dict[str, Any]]) -> None:
        """Apply decoded records and checked events in one transaction: the ``TaskResult`` rows of
        the records, the runs of both, what subscribers derive, the recorder's mark.

        A run whose task-sent event and record come in one batch is written once, as one
        change (not a SENT row, then its final state: a write, a read and a rollup move less).
        """
        rows = [record.row for record in records if record.row is not None]
        limits = (self.settings["REPR_LIMIT"], self.settings["TRACEBACK_LIMIT"])
        facts = [fact for row in rows for fact in record_rows.facts(row, *limits)]
        if events:
            payloads = payload_limit()
            facts += [f for e in events if (f := fact_from_event(e, *limits, payloads)) is not None]
        # One transaction for the runs, what the subscribers derive from them and the
        # recorder's mark: a recorder killed (or a database error) mid-batch leaves none
        # of it, so the runs are rebuilt and counted again, never half counted.
        with transaction.atomic():
            lock_writers()
            if rows:
                record_rows.write_results(rows)
            changes = self.runs.apply(facts)
            for subscriber in self.subscribers:
                subscriber.on_events(events)
                subscriber.on_changes(changes)
            now = self.clock()
            stamps = [e["timestamp"] for e in events if e.get("timestamp")]
            stamps += [r.timestamp for r in records]
            if stamps:
                RecorderState.objects.filter(name=self.name).update(
                    events=F("events") + len(events) + len(records),
                    **self.mark(stamps, now),
                )

    def mark(self, stamps: list[float], now: float) -> dict[str, Any]:
        """The recorder's mark of a batch whose events and records are dated ``stamps``.

        Dates come from the workers' clocks (and from anyone who can publish an
        event): one ahead counts as now (an event dated 9999 held
        ``last_event_at`` there, and reconciliation, which starts from it, found
        nothing more), and one older than the runs are kept (``RUN_RETENTION``,
        at least a day) is left out of the lag (a valid event dated 1970 made the
        lag 56 years, the recorder unhealthy, until the next batch).
        """
        oldest_credible = now - max(float(self.settings["RUN_RETENTION"] or 0), 86400.0)
        credible = [stamp for stamp in stamps if stamp >= oldest_credible] or [now]
        return {
            "last_event_at": dt.datetime.fromtimestamp(min(max(stamps), now), dt.UTC),
            "lag": max(now - min(credible), 0.0),
        }

    # --- records (taskdeck.results.record) ------------------------------------

    def pump_records(self, wait: float, claim: bool = False) -> int:
        """Read one batch of records (or claim a dead consumer's) and write it with the events waiting
        (none with a claim); how many records were read."""
        assert self.records is not None
        try:
            size = self.settings["BATCH_SIZE"]
            if claim:
                records = self.records.claim(size)
            else:
                records = self.records.read(size, wait)
                linger = float(self.settings["RECORD_LINGER"] or 0)
                if records and len(records) < size and linger > 0:
                    # A batch's fixed cost (a transaction, a statement per table) is most of a
                    # small one's: take what comes until the oldest record is `linger` old.
                    oldest = min(r.timestamp for r in records)
                    if not self.stopping.wait(min(max(oldest + linger - time.time(), 0.0), linger)):
                        records += self.records.read(size - len(records), 0)
        except Exception:  # noqa: BLE001 - Redis down or restarting: the records wait in the stream
            self._log_error("records.read")
            self.stopping.wait(max(wait, 0.5))
            records = []
        events = [] if claim else self.source.batch(self.settings["BATCH_SIZE"], 0)
        self.process_records(records, events)
        return len(records)

    def process_records(self, records: list[Record], events: list[Any] | None = None) -> None:
        """Write a batch of records and ``events`` (:meth:`write_batch`), then acknowledge the records.

        A record that does not decode is dead-lettered, an event that fails :func:`check` counted
        as bad. A batch the database refuses is written again as its records and its events
        apart, each split until the record or event whose row is refused stands alone.
        """
        assert self.records is not None
        clean = self._checked(events or [])
        good = []
        for record in records:
            if record.row is None:
                self.bad.count("record undecodable")
                self.dead_letter(
                    "result",
                    f"task run record does not decode: {record.error}",
                    source=f"recorder {self.name}",
                    body=record.raw,
                )
            else:
                good.append(record)
        if not self._write_batch_or_apart(good, clean):
            return  # stopping with the database down: left pending for the next start
        if records:
            try:
                self.records.ack(records)
            except Exception:  # noqa: BLE001 - left pending: written again (idempotent) by whoever reads it
                self._log_error("records.ack")
        reset_queries()

    def _write_batch_or_apart(self, records: list[Record], events: list[dict[str, Any]]) -> bool:
        """:meth:`write_batch`; refused, the records and the events apart. False: stopping, unwritten."""
        if records and events:
            try:
                return self._retrying(self.write_batch, records, events)
            except Exception:  # noqa: BLE001 - refused: each part alone finds the row
                pass
        if events:
            self._write_or_split(events)
        return self._write_records_or_split(records) if records else True

    def _write_records_or_split(self, records: list[Record]) -> bool:
        try:
            return self._retrying(self.write_records, records)
        except Exception as exc:  # noqa: BLE001 - refused: find the record whose row it is
            if len(records) == 1:
                row = records[0].row or {}
                reason = f"the database refused the rows of this record: {type(exc).__name__}: {exc}"
                logger.error("%s; record dead-lettered: %.300r", reason, records[0].raw, exc_info=exc)
                self.bad.count("row refused")
                self.dead_letter(
                    "row",
                    reason,
                    source=f"recorder {self.name}",
                    body=records[0].raw,
                    task_id=str(row.get("task_id") or ""),
                    task=str(row.get("task_name") or ""),
                )
                return True
            middle = len(records) // 2
            first = self._write_records_or_split(records[:middle])
            return self._write_records_or_split(records[middle:]) and first

    def write_records(self, records: list[Record]) -> None:
        """Apply records: the ``TaskResult`` rows, the runs, what subscribers derive, the recorder's mark."""
        self.write_batch(records, [])

    def save_bad_events(self) -> None:
        """Add the bad events counted since the last call to the recorder's row (for /metrics)."""
        counts = self.bad.take()
        if not counts:
            return
        try:
            with transaction.atomic():
                state = RecorderState.objects.select_for_update().filter(name=self.name).first()
                if state is None:
                    state = RecorderState(name=self.name)
                totals = Counter(state.bad_events or {})
                totals.update(counts)
                state.bad_events = dict(totals)
                state.save()
        except BaseException:
            self.bad.give_back(counts)
            raise

    def tick(self, now: float) -> None:
        self.save_bad_events()
        if self.reconcile_every.due(now):
            # Leave the newest runs to their events; reconcile what should have arrived.
            margin = dt.timedelta(seconds=self.settings["RECONCILE_MARGIN"])
            until = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(seconds=10)
            self.reconcile(until - margin, until)
        if self.records is not None and self.claim_every.due(now):
            while self.pump_records(0, claim=True) and not self.stopping.is_set():
                pass
        for subscriber in self.subscribers:
            try:
                subscriber.on_tick(now)
            except Exception as exc:
                if is_database_outage(exc):
                    raise
                self._log_error(f"{subscriber.name}.on_tick")
        if self.source.ready.is_set() and self.heartbeat_every.due(now):
            RecorderState.objects.filter(name=self.name).update(
                heartbeat_at=dt.datetime.fromtimestamp(now, dt.UTC), backlog=self.records_backlog()
            )

    def records_backlog(self) -> int | None:
        """Entries waiting in the records stream; None without records, or while Redis does not answer."""
        if self.records is None:
            return None
        try:
            return self.records.backlog()
        except Exception:  # Redis down: the heartbeat still goes; reading records says why
            return None

    def reconcile(self, since: dt.datetime | None, until: dt.datetime | None) -> int:
        """Fill in runs that finished without the recorder seeing it; returns how many."""
        if self.results is None:
            return 0
        filled = 0
        for facts in self.results.missing(since, until):
            with transaction.atomic():  # as in write(): runs and what derives from them together
                lock_writers()
                changes = self.runs.apply(facts)
                for subscriber in self.subscribers:
                    subscriber.on_changes(changes)
            filled += len(changes)
        if filled:
            RecorderState.objects.filter(name=self.name).update(reconciled=F("reconciled") + filled)
            logger.info("reconstructed %d runs from the results table", filled)
        return filled


def payload_limit() -> int:
    """Largest payload text the recorder keeps: what producers with the same settings send, and room."""

    size = conf.payloads()["MAX_BYTES"]
    if not isinstance(size, int) or size <= 0:  # taskdeck.E027 names it
        size = conf.PAYLOADS_DEFAULTS["MAX_BYTES"]
    return 2 * size + 1024


def asking_online(app: Any, timeout: float = 1.0) -> Any:
    """``app.control.inspect`` that returns once every online worker replied, else after ``timeout``.

    Without a limit a broadcast waits out its whole timeout, and the
    recorder's loop reads no record meanwhile: ``stats`` and ``active_queues``
    held it 2 s every ``INSPECT_INTERVAL``; with one worker online, 5-17 ms.
    """
    from taskdeck.models import Worker

    return app.control.inspect(timeout=timeout, limit=Worker.objects.online().count() or None)


def build(app: Any, settings: dict[str, Any] | None = None, name: str = "default") -> Recorder:
    """A recorder wired from ``TASKDECK["MONITOR"]``: every default subscriber."""
    from taskdeck import brokers
    from taskdeck.monitor.alerts import Alerts, deliveries
    from taskdeck.monitor.liveness import Liveness, acks_late_of
    from taskdeck.monitor.queues import ConsumerCounts
    from taskdeck.monitor.retention import Retention
    from taskdeck.monitor.rollups import Rollups, Totals
    from taskdeck.monitor.sampler import QueueSampler, configured_queues
    from taskdeck.monitor.workers import WorkerInspector, Workers

    s = settings or conf.monitor()
    bad = BadEvents(store=deadletter.store)
    subscribers: list[Subscriber] = [
        Workers(misses=s["HEARTBEAT_MISSES"]),
        WorkerInspector(
            lambda: asking_online(app).stats(),
            s["INSPECT_INTERVAL"],
            active_queues=lambda: asking_online(app).active_queues(),
        ),
        Rollups(),
        Totals(s["METRICS_BUCKETS"]),
        QueueSampler(
            brokers.for_url(app.conf.broker_url or ""),
            app.connection_for_read,
            configured_queues(app, s["QUEUES"]),
            s["SAMPLE_INTERVAL"],
            s["RABBITMQ_MANAGEMENT_URL"],
            consumers=ConsumerCounts(app, interval=s["INSPECT_INTERVAL"]),
        ),
        Liveness(
            broker=brokers.for_url(app.conf.broker_url or ""),
            options=dict(app.conf.broker_transport_options or {}),
            acks_late=acks_late_of(app),
            stuck_after=s["STUCK_AFTER"],
            no_consumer_after=s["STUCK_NO_CONSUMER_AFTER"],
            interval=s["LIVENESS_INTERVAL"],
        ),
        Retention(
            runs=s["RUN_RETENTION"],
            rollups=s["ROLLUP_RETENTION"],
            samples=s["SAMPLE_RETENTION"],
            incidents=s["INCIDENT_RETENTION"],
            workers=s["WORKER_RETENTION"],
            deadletters=s["DEAD_LETTER_RETENTION"],
            deadletter_bytes=s["DEAD_LETTER_MAX_BYTES"],
            interval=s["PRUNE_INTERVAL"],
            batch=s["PRUNE_BATCH"],
        ),
    ]
    if s["ALERTS"]:
        subscribers.append(Alerts(s["ALERTS"], deliveries(s), interval=s["ALERT_INTERVAL"], recorder=name))
    return Recorder(
        source=EventSource(app, s["BUFFER"], bad, name=name, settings=s),
        runs=RunWriter(),
        subscribers=subscribers,
        results=ResultsSource(s["REPR_LIMIT"], s["TRACEBACK_LIMIT"]),
        settings=s,
        name=name,
        bad=bad,
        records=RecordSource.for_app(app, name),
    )
