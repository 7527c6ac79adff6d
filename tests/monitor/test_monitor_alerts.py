"""Alerts: one message per incident, a resolve message when it clears; log, webhook and email.

Messages go out on the outbox's own thread: a webhook that hangs holds
neither the evaluation nor the recorder, and a full outbox drops (and logs)
instead of waiting.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import connections
from django.utils import timezone

from taskdeck.errors import ConfigurationError
from taskdeck.models import AlertIncident, QueueSample, TaskRollup, TaskRun, Worker
from taskdeck.monitor.alerts import Alerts, deliveries
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def serving(received: list, hold: threading.Event | None = None):
    """A real HTTP server on a free port that keeps each JSON body POSTed; it answers each request
    once ``hold`` is set (at once without one). Yields the hook's URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            if hold is not None:
                hold.wait(60)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()


@pytest.fixture
def webhook():
    received: list = []
    with serving(received) as url:
        yield url, received


RULES = [
    {"name": "feeds failing", "kind": "failure_rate", "task": "catalog.*", "threshold": 0.2, "window": 600},
    {"name": "backlog", "kind": "queue_depth", "threshold": 100},
    {"name": "worker gone", "kind": "worker_offline"},
]


def test_one_alert_per_incident_and_a_resolve(webhook, caplog):
    url, received = webhook
    alerts = Alerts(RULES, deliveries({"ALERT_WEBHOOK": url, "ALERT_EMAILS": ["ops@example.com"]}))
    now = timezone.now()
    minute = now.replace(second=0, microsecond=0)
    feed = "catalog.tasks.import_feed"
    TaskRollup.objects.create(minute=minute, name=feed, queue="default", succeeded=3, failed=2)
    QueueSample.objects.create(sampled_at=now, queue="default", ready=500)
    Worker.objects.create(hostname="w1@h", online=False, last_heartbeat=now)

    fired = alerts.evaluate(now)
    assert sorted((s, i.rule, i.subject) for s, i in fired) == [
        ("firing", "backlog", "default"),
        ("firing", "feeds failing", "catalog.*"),
        ("firing", "worker gone", "w1@h"),
    ]
    assert alerts.evaluate(now) == []  # still breached: no second message
    assert AlertIncident.objects.filter(resolved_at=None).count() == 3

    TaskRollup.objects.update(succeeded=100)  # failure rate now 2%
    QueueSample.objects.create(sampled_at=timezone.now(), queue="default", ready=3)
    Worker.objects.update(online=True)
    resolved = alerts.evaluate(timezone.now())
    assert sorted((s, i.rule) for s, i in resolved) == [
        ("resolved", "backlog"),
        ("resolved", "feeds failing"),
        ("resolved", "worker gone"),
    ]
    wait_for(alerts.outbox.idle, 30, "the outbox to send every message")
    assert [(m["status"], m["rule"]) for m in received].count(("firing", "backlog")) == 1
    assert len(received) == 6 and len(mail.outbox) == 6
    assert "[FIRING] backlog" in caplog.text and "[RESOLVED] backlog" in caplog.text


def test_lost_and_stuck_rules_fire_per_queue_and_resolve():
    rules = [
        {"name": "lost work", "kind": "lost"},
        {"name": "billing stuck", "kind": "stuck", "task": "billing.*", "threshold": 1},
    ]
    alerts = Alerts(rules, [])
    now = timezone.now()
    base = {"state_at": now.timestamp(), "first_seen_at": now}
    TaskRun.objects.create(task_id="l1", name="orders.charge", queue="high", state="LOST", **base)
    for n, name in enumerate(["billing.invoice", "billing.refund", "orders.charge"]):
        TaskRun.objects.create(task_id=f"s{n}", name=name, queue="billing", state="STUCK", **base)

    fired = alerts.evaluate(now)
    assert sorted((i.rule, i.subject, i.value) for _, i in fired) == [
        ("billing stuck", "billing", 2.0),  # two billing.* runs: over the threshold of 1
        ("lost work", "high", 1.0),
    ]
    TaskRun.objects.filter(task_id="l1").update(state="SUCCESS")  # redelivered and done
    TaskRun.objects.filter(task_id="s0").update(state="RECEIVED")
    resolved = alerts.evaluate(timezone.now())
    assert sorted((s, i.rule) for s, i in resolved) == [
        ("resolved", "billing stuck"),
        ("resolved", "lost work"),
    ]


def test_unknown_rule_kind_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown_kind|kind"):
        Alerts([{"name": "x", "kind": "unknown_kind"}], [])


@pytest.fixture
def hanging_webhook():
    """A webhook that holds every request until released."""
    release, arrived = threading.Event(), []
    with serving(arrived, release) as url:
        yield url, arrived, release


def test_a_hanging_webhook_never_holds_evaluation_and_a_full_outbox_drops(hanging_webhook, caplog):
    url, arrived, release = hanging_webhook
    rule = {"name": "backlog", "kind": "queue_depth", "threshold": 10}
    alerts = Alerts([rule], deliveries({"ALERT_WEBHOOK": url}), outbox_size=2)

    def evaluate_elsewhere():
        """evaluate() on another thread: a delivery on the caller's thread shows as a hang, not a pass."""
        found: list = []

        def run():
            found.extend(alerts.evaluate(timezone.now()))
            connections.close_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_for(lambda: not thread.is_alive(), 30, "evaluate() to return while the webhook hangs")
        return found

    QueueSample.objects.create(sampled_at=timezone.now(), queue="q0", ready=100)
    assert [s for s, _ in evaluate_elsewhere()] == ["firing"]
    wait_for(lambda: len(arrived) == 1, 30, "the first message to reach the webhook (which holds it)")

    for i in range(1, 5):
        QueueSample.objects.create(sampled_at=timezone.now(), queue=f"q{i}", ready=100)
    assert len(evaluate_elsewhere()) == 4  # two wait in the outbox, two are dropped
    assert alerts.outbox.dropped == 2 and caplog.text.count("alert outbox full") == 2

    QueueSample.objects.all().delete()
    assert [s for s, _ in evaluate_elsewhere()] == ["resolved"] * 5  # recorded, though not sent
    assert AlertIncident.objects.filter(resolved_at=None).count() == 0
    assert alerts.outbox.dropped == 7 and not release.is_set()

    release.set()
    wait_for(alerts.outbox.idle, 30, "the outbox to drain once the webhook answers")
    assert [(m["status"], m["subject"]) for m in arrived] == [("firing", f"q{i}") for i in range(3)]
    assert alerts.outbox.sent == 3
    alerts.on_stop()
