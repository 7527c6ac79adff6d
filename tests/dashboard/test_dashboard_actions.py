"""Purge, revoke and worker pool control through the dashboard, against a real broker and workers.

Each action is a POST with the operator's permission; each writes the audit
log; each is checked against what the broker or the worker says afterwards.
"""

from __future__ import annotations

import time

import pytest
import redis
from celery import current_app
from django.urls import reverse

from maintenance.tasks import rebuild_search_index
from taskdeck.models import AuditEntry, TaskRun, Worker
from taskdeck.monitor.workers import WorkerInspector, Workers
from tests.dashboard.test_dashboard_access import failed_run, logged_in
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEP = "\x06\x16"  # kombu's separator between a queue name and its priority step


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_purge_empties_every_priority_sub_queue(broker, accounts):
    for priority in (0, 0, 3, 9):
        rebuild_search_index.apply_async((1,), queue="low_priority", priority=priority)
    client = redis.Redis.from_url(broker)
    keys = ["low_priority"] + [f"low_priority{SEP}{step}" for step in (3, 6, 9)]
    assert sum(client.llen(k) for k in keys) == 4
    operator = logged_in("operator")
    confirm = operator.get(reverse("taskdeck:purge-confirm", args=["low_priority"]))
    assert confirm.status_code == 200 and "cannot be brought back" in confirm.content.decode()
    response = operator.post(reverse("taskdeck:purge", args=["low_priority"]), follow=True)
    assert "purged 4 message(s) from low_priority" in messages_of(response)
    assert sum(client.llen(k) for k in keys) == 0
    entry = AuditEntry.objects.get(action="purge")
    assert (entry.target, entry.ok, entry.detail, entry.username) == (
        "low_priority",
        True,
        {"purged": 4},
        "operator",
    )
    # A queue the app does not declare is refused, and the refusal is logged too.
    response = operator.post(reverse("taskdeck:purge", args=["not-a-queue"]), follow=True)
    assert any("not a queue this app declares" in m for m in messages_of(response))
    assert AuditEntry.objects.filter(action="purge", ok=False, target="not-a-queue").exists()


def test_retry_refuses_arguments_that_were_cut(broker, accounts):
    cut = '{"args": ["xxx…"], "kwargs": {}, "truncated": true, "redacted": false}'
    run = failed_run(args="('" + "x" * 1100 + "',)", payload=cut)
    operator = logged_in("operator")
    page = operator.get(reverse("taskdeck:task", args=[run.task_id])).content.decode()
    assert "cut to fit" in page
    response = operator.post(reverse("taskdeck:retry", args=[run.task_id]), follow=True)
    assert any("cut to fit" in m for m in messages_of(response))
    assert AuditEntry.objects.get(action="retry").ok is False
    assert redis.Redis.from_url(broker).llen("default") == 0  # nothing was sent


def test_retry_all_of_a_failure_group(broker, accounts):
    for i in range(3):
        failed_run(f"t-{i}", args=f"('ftp://example.com/{i}.xml',)")
    failed_run("other", name="notifications:send_sms", args="('555',)", exception="ValueError('not E.164')")
    operator = logged_in("operator")
    params = {"since": "24h", "name": "catalog.tasks.import_feed", "exc": "ValueError"}
    confirm = operator.get(reverse("taskdeck:retry-group-confirm"), params).content.decode()
    assert "Retry 3 runs" in confirm and "Nothing has been sent yet" in confirm
    assert redis.Redis.from_url(broker).llen("default") == 0  # the dry run sent nothing
    response = operator.post(reverse("taskdeck:retry-group"), params, follow=True)
    assert "retried 3 run(s) of catalog.tasks.import_feed" in messages_of(response)
    assert redis.Redis.from_url(broker).llen("default") == 3
    assert set(AuditEntry.objects.filter(action="retry", ok=True).values_list("target", flat=True)) == {
        "t-0",
        "t-1",
        "t-2",
    }
    page = operator.get(reverse("taskdeck:failures"), {"since": "24h"}).content.decode()
    assert "import_feed" not in page and "send_sms" in page  # retried runs leave the list


def test_revoke_terminates_a_running_task(start_worker, start_recorder, accounts):
    start_worker(["low_priority"], concurrency=1)
    start_recorder()
    slow = rebuild_search_index.apply_async((1,), {"seconds": 120})
    wait_for(
        lambda: TaskRun.objects.filter(task_id=slow.id, state="STARTED").exists(), 60, "the task to start"
    )
    operator = logged_in("operator")
    response = operator.post(reverse("taskdeck:revoke", args=[slow.id]), {"terminate": "1"}, follow=True)
    assert any("revoked and its process sent SIGTERM" in m for m in messages_of(response))
    wait_for(
        lambda: TaskRun.objects.filter(task_id=slow.id, state="REVOKED").exists(), 60, "REVOKED recorded"
    )
    assert AuditEntry.objects.get(action="terminate").target == slow.id
    response = operator.post(reverse("taskdeck:revoke", args=[slow.id]), follow=True)
    assert any("already ended (REVOKED)" in m for m in messages_of(response))


def test_pool_grow_shrink_and_shutdown(start_worker, accounts):
    worker = start_worker(["default"], concurrency=1)
    host = worker.hostname
    # The recorder's own subscribers, fed by the live worker: its heartbeat, then `inspect stats`.
    Workers().on_events(
        [{"type": "worker-heartbeat", "hostname": host, "timestamp": time.time(), "freq": 2.0}]
    )
    WorkerInspector(lambda: current_app.control.inspect([host], timeout=5).stats(), 30).on_tick(time.time())
    assert Worker.objects.get(hostname=host).pool == "prefork"

    def processes() -> int:
        return len(current_app.control.inspect([host], timeout=5).stats()[host]["pool"]["processes"])

    operator = logged_in("operator")
    page = operator.get(reverse("taskdeck:workers")).content.decode()
    assert reverse("taskdeck:pool", args=[host]) in page
    response = operator.post(reverse("taskdeck:pool", args=[host]), {"delta": "1"}, follow=True)
    assert any("pool will grow" in m for m in messages_of(response)), messages_of(response)
    wait_for(lambda: processes() == 2, 30, "the pool to grow to 2")
    response = operator.post(reverse("taskdeck:pool", args=[host]), {"delta": "-1"}, follow=True)
    assert any("pool will shrink" in m for m in messages_of(response)), messages_of(response)
    wait_for(lambda: processes() == 1, 30, "the pool to shrink to 1")
    response = operator.post(reverse("taskdeck:pool", args=[host]), {"delta": "-1"}, follow=True)
    assert any("a pool keeps one" in m for m in messages_of(response))  # concurrency 1 as recorded

    confirm = operator.get(reverse("taskdeck:shutdown-confirm", args=[host])).content.decode()
    assert "only worker consuming" in confirm and "default" in confirm
    response = operator.post(reverse("taskdeck:shutdown", args=[host]), follow=True)
    assert any("asked to shut down" in m for m in messages_of(response))
    wait_for(lambda: not worker.alive(), 60, "the worker to exit")
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "ok"))
    assert actions == [("pool_grow", True), ("pool_shrink", True), ("pool_shrink", False), ("shutdown", True)]
