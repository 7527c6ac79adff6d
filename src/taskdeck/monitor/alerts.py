"""Alerts: rules from settings, evaluated by the recorder; one message per incident and one on resolve.

A rule is a dict ``{"name", "kind", "threshold", ...}``. Each evaluation
yields the subjects (a task pattern, a queue, a worker) in breach with their
value; a subject newly in breach opens an :class:`~taskdeck.models.AlertIncident`
and sends "firing", one no longer in breach resolves it and sends
"resolved". Open incidents live in the database, so a recorder restart
neither repeats nor forgets them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from django.core.mail import send_mail

from taskdeck.errors import ConfigurationError
from taskdeck.models import AlertIncident, QueueSample, RecorderState, TaskRollup, Worker
from taskdeck.monitor.subscribers import Every, Subscriber

logger = logging.getLogger("taskdeck.alerts")

Delivery = Callable[[str, AlertIncident], None]
KINDS = {"failure_rate", "queue_depth", "oldest_message_age", "worker_offline", "recorder_lag"}


def breaches(rule: dict[str, Any], now: dt.datetime, recorder: str = "default") -> dict[str, float]:
    """``{subject: value}`` for every subject that breaks ``rule`` now."""
    kind, threshold = rule["kind"], float(rule.get("threshold", 0))
    if kind == "failure_rate":
        since = now - dt.timedelta(seconds=rule.get("window", 300))
        pattern = rule.get("task", "*")
        rows = TaskRollup.objects.window(since, queue=rule.get("queue"))
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


class Alerts(Subscriber):
    name = "alerts"

    def __init__(
        self,
        rules: list[dict[str, Any]],
        deliver: Iterable[Delivery],
        interval: float = 10,
        recorder: str = "default",
    ):
        for rule in rules:
            if rule.get("kind") not in KINDS or not rule.get("name"):
                raise ConfigurationError(
                    f"TASKDECK['MONITOR']['ALERTS'] rule {rule!r} needs a 'name' and a 'kind' "
                    f"among {', '.join(sorted(KINDS))}"
                )
        self.rules = rules
        self.deliver = list(deliver)
        self.every = Every(interval)
        self.recorder = recorder

    def on_tick(self, now: float) -> None:
        if self.every.due(now):
            self.evaluate(dt.datetime.fromtimestamp(now, dt.UTC))

    def evaluate(self, now: dt.datetime) -> list[tuple[str, AlertIncident]]:
        """Open and resolve incidents; returns the (status, incident) pairs delivered."""
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
        for status, incident in sent:
            for deliver in self.deliver:
                try:
                    deliver(status, incident)
                except Exception:  # one failing channel must not silence the others
                    logger.exception("alert delivery %r failed", deliver)
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
