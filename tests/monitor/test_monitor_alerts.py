"""Alerts: one message per incident, a resolve message when it clears; log, webhook and email."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from taskdeck.errors import ConfigurationError
from taskdeck.models import AlertIncident, QueueSample, TaskRollup, Worker
from taskdeck.monitor.alerts import Alerts, deliveries

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


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
    assert [(m["status"], m["rule"]) for m in received].count(("firing", "backlog")) == 1
    assert len(received) == 6 and len(mail.outbox) == 6
    assert "[FIRING] backlog" in caplog.text and "[RESOLVED] backlog" in caplog.text


def test_unknown_rule_kind_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown_kind|kind"):
        Alerts([{"name": "x", "kind": "unknown_kind"}], [])
