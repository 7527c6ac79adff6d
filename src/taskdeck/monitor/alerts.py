"""Alerts: rules from settings, evaluated by the recorder; one message per incident and one on resolve.

A rule is a dict ``{"name", "kind", "threshold", ...}``. Each evaluation
yields the subjects (a task pattern, a queue, a worker) in breach with their
value; a subject newly in breach opens an :class:`~taskdeck.models.AlertIncident`
and sends "firing", one no longer in breach resolves it and sends
"resolved". Open incidents live in the database, so a recorder restart
neither repeats nor forgets them.

Messages are sent by an :class:`Outbox`: a thread of its own fed through a
bounded queue, so a slow or dead webhook or mail server never holds the
recorder's apply thread. When the queue is full a message is dropped and
logged (the incident itself is in the database either way).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import queue
import threading
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from django.core.mail import send_mail
from django.db import transaction

from taskdeck.errors import ConfigurationError
from taskdeck.models import AlertIncident, QueueSample, RecorderState, TaskRun, Worker
from taskdeck.monitor.runs import lock_writers
from taskdeck.monitor.series import rollup_table
from taskdeck.monitor.subscribers import Every, Subscriber

logger = logging.getLogger("taskdeck.alerts")

Delivery = Callable[[str, AlertIncident], None]
#: Messages waiting for delivery; past this many, new ones are dropped (and logged).
QUEUE_SIZE = 1000
KINDS = {
    "failure_rate",
    "queue_depth",
    "oldest_message_age",
    "worker_offline",
    "recorder_lag",
    "lost",
    "stuck",
}


def breaches(rule: dict[str, Any], now: dt.datetime, recorder: str = "default") -> dict[str, float]:
    """``{subject: value}`` for every subject that breaks ``rule`` now."""
    kind, threshold = rule["kind"], float(rule.get("threshold", 0))
    if kind == "failure_rate":
        window = rule.get("window", 300)
        # The table a chart of the window reads: minutes up to 6 h, then quarter hours, then hours.
        table = rollup_table(window)
        since = now - dt.timedelta(seconds=window)
        since -= dt.timedelta(seconds=since.timestamp() % table.period)
        pattern = rule.get("task", "*")
        rows = table.objects.window(since, queue=rule.get("queue"))
        if pattern != "*":
            names = set(rows.values_list("name", flat=True).distinct())
            rows = rows.filter(name__in=fnmatch.filter(names, pattern))
        stats = rows.stats()
        if stats["finished"] >= rule.get("min_runs", 1) and stats["failure_rate"] > threshold:
            return {pattern: stats["failure_rate"]}
        return {}
    if kind in {"queue_depth", "oldest_message_age"}:
        samples = QueueSample.objects.filter(sampled_at__gte=now - dt.timedelta(minutes=5)).latest_per_queue()
        out = {}
        for sample in samples:
            if rule.get("queue") and sample.queue != rule["queue"]:
                continue
            value = sample.ready if kind == "queue_depth" else sample.oldest_age
            if value is not None and value > threshold:
                out[sample.queue] = float(value)
        return out
    if kind in {"lost", "stuck"}:
        # Runs LOST or STUCK now (taskdeck.monitor.liveness), per queue; the subject is the queue.
        counts = TaskRun.objects.in_state_by_queue(
            kind.upper(), queue=rule.get("queue"), task=rule.get("task")
        )
        return {queue: float(count) for queue, count in counts.items() if count > threshold}
    if kind == "worker_offline":
        return {w.hostname: 1.0 for w in Worker.objects.filter(online=False)}
    if kind == "recorder_lag":
        state = RecorderState.objects.filter(name=recorder).first()
        if state is None or state.heartbeat_at is None:
            return {recorder: float("inf")}
        silent = (now - state.heartbeat_at).total_seconds()
        value = max(state.lag, silent)
        return {recorder: value} if value > threshold else {}
    raise ConfigurationError(
        f"TASKDECK['MONITOR']['ALERTS'] rule {rule.get('name')!r} has unknown kind {kind!r}; "
        f"use one of {', '.join(sorted(KINDS))}"
    )


class Outbox:
    """Delivers (status, incident) pairs on a thread of its own, through a bounded queue."""

    def __init__(self, deliver: Iterable[Delivery], size: int = QUEUE_SIZE) -> None:
        self.deliver = list(deliver)
        self.queue: queue.Queue[tuple[str, AlertIncident] | None] = queue.Queue(maxsize=size)
        self.dropped = 0
        self.sent = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, status: str, incident: AlertIncident) -> None:
        """Queue one message; never blocks."""
        self._start()
        try:
            self.queue.put_nowait((status, incident))
        except queue.Full:
            self.dropped += 1
            logger.error(
                "alert outbox full (%d waiting: a channel is slow or down); dropped [%s] %s",
                self.queue.maxsize,
                status,
                incident.message,
            )

    def idle(self) -> bool:
        """Nothing waiting and nothing being sent."""
        return self.queue.unfinished_tasks == 0

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, for at most ``timeout`` seconds, then stop the thread."""
        if self._thread is None:
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            logger.error("alert outbox still full at stop; %d messages not sent", self.queue.qsize())
            return
        self._thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="taskdeck-alerts", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                for deliver in self.deliver:
                    try:
                        deliver(*item)
                    except Exception:  # one failing channel must not silence the others
                        logger.exception("alert delivery %r failed", deliver)
                self.sent += 1
            finally:
                self.queue.task_done()


class Alerts(Subscriber):
    name = "alerts"

    def __init__(
        self,
        rules: list[dict[str, Any]],
        deliver: Iterable[Delivery],
        interval: float = 10,
        recorder: str = "default",
        outbox_size: int = QUEUE_SIZE,
    ):
        for rule in rules:
            if rule.get("kind") not in KINDS or not rule.get("name"):
                raise ConfigurationError(
                    f"TASKDECK['MONITOR']['ALERTS'] rule {rule!r} needs a 'name' and a 'kind' "
                    f"among {', '.join(sorted(KINDS))}"
                )
        self.rules = rules
        self.outbox = Outbox(deliver, outbox_size)
        self.every = Every(interval)
        self.recorder = recorder

    def on_tick(self, now: float) -> None:
        if self.every.due(now):
            self.evaluate(dt.datetime.fromtimestamp(now, dt.UTC))

    def on_stop(self) -> None:
        self.outbox.close()

    def evaluate(self, now: dt.datetime) -> list[tuple[str, AlertIncident]]:
        """Open and resolve incidents; returns the (status, incident) pairs handed to the outbox."""
        with transaction.atomic():
            # Two recorders at once (one restarted elsewhere) must not open an incident twice.
            lock_writers()
            sent = self._open_and_resolve(now)
        for status, incident in sent:
            self.outbox.put(status, incident)
        return sent

    def _open_and_resolve(self, now: dt.datetime) -> list[tuple[str, AlertIncident]]:
        sent = []
        for rule in self.rules:
            found = breaches(rule, now, self.recorder)
            open_ = {i.subject: i for i in AlertIncident.objects.filter(rule=rule["name"], resolved_at=None)}
            for subject, value in found.items():
                if subject in open_:
                    continue
                incident = AlertIncident.objects.create(
                    rule=rule["name"],
                    subject=subject,
                    opened_at=now,
                    value=value,
                    message=f"{rule['name']}: {rule['kind']} of {subject or '-'} is {value:.3g} "
                    f"(threshold {rule.get('threshold', 0)})",
                )
                sent.append(("firing", incident))
            for subject, incident in open_.items():
                if subject not in found:
                    incident.resolved_at = now
                    incident.save(update_fields=["resolved_at"])
                    sent.append(("resolved", incident))
        return sent


def log_delivery(status: str, incident: AlertIncident) -> None:
    level = logging.WARNING if status == "firing" else logging.INFO
    logger.log(level, "[%s] %s", status.upper(), incident.message)


def webhook_delivery(url: str, timeout: float = 5.0) -> Delivery:
    def deliver(status: str, incident: AlertIncident) -> None:
        body = json.dumps(
            {
                "status": status,
                "rule": incident.rule,
                "subject": incident.subject,
                "value": incident.value,
                "message": incident.message,
                "opened_at": incident.opened_at.isoformat(),
                "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            }
        ).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (configured URL)
            pass

    return deliver


def email_delivery(recipients: list[str]) -> Delivery:
    def deliver(status: str, incident: AlertIncident) -> None:
        send_mail(
            f"[taskdeck] {status}: {incident.rule} {incident.subject}", incident.message, None, recipients
        )

    return deliver


def deliveries(settings: dict[str, Any]) -> list[Delivery]:
    out: list[Delivery] = [log_delivery]
    if settings.get("ALERT_WEBHOOK"):
        out.append(webhook_delivery(settings["ALERT_WEBHOOK"]))
    if settings.get("ALERT_EMAILS"):
        out.append(email_delivery(list(settings["ALERT_EMAILS"])))
    return out
