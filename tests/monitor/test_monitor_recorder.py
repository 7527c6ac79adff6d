"""The real recorder process against real workers, Redis and PostgreSQL."""

from __future__ import annotations

import re

import pytest

from catalog.tasks import build_gallery, import_feed
from notifications.tasks import send_sms
from orders.tasks import charge_payment
from reports.tasks import daily_report
from taskdeck.models import TaskRun, Worker
from taskdeck.results import BACKEND
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TOTAL = r'taskdeck_tasks_total\{name="([^"]*)",queue="([^"]*)",state="([^"]*)"\} (\S+)'
QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]
#: Where the recorder learns of runs: the records of the shipped default on Redis, or the task
#: events of the direct backend (the default on RabbitMQ without a Redis for records).
FACTS = {"records": {}, "events": {"CELERY_BACKEND": BACKEND}}
#: A run's timeline: with records there is no RECEIVED (no task-received event).
TIMELINE = {
    "records": ["SENT", "STARTED", "SUCCESS"],
    "events": ["SENT", "RECEIVED", "STARTED", "SUCCESS"],
}


def workload():
    """Ten runs: a retried task, a chain of three, a chord of 3+1, a failure, a namespaced task."""
    results = {
        "charge": charge_payment.delay(7, 1500, gateway_failures=2),
        "report": daily_report("2024-03-01").apply_async(),
        "gallery": build_gallery(3, [1, 2, 3]).apply_async(),
        "feed": import_feed.delay("ftp://nope"),
        "sms": send_sms.delay("+4412345", "hi"),
    }
    for result in results.values():
        result.get(timeout=120, propagate=False)
    return results


def all_final(count):
    return TaskRun.objects.filter(state__in=["SUCCESS", "FAILURE"]).count() >= count


@pytest.mark.parametrize("facts", FACTS)
def test_api_reports_exactly_the_runs_sent(start_worker, start_recorder, staff_client, facts):
    start_recorder()
    worker = start_worker(QUEUES, env=FACTS[facts])
    results = workload()
    wait_for(lambda: all_final(10), 60, "ten finished runs")

    page = staff_client.get("/taskdeck/api/tasks", {"limit": 100}).json()
    runs = {r["task_id"]: r for r in page["items"]}
    assert len(runs) == 10 and page["next"] is None
    charge = runs[results["charge"].id]
    assert (charge["state"], charge["retries"], charge["queue"], charge["worker"]) == (
        "SUCCESS",
        2,
        "high_priority",
        worker.hostname,
    )
    assert charge["priority"] == 0  # the high lane on Redis
    feed = runs[results["feed"].id]
    assert feed["state"] == "FAILURE" and "must be http(s)" in feed["exception"]
    assert runs[results["sms"].id]["queue"] == "notifications"
    assert {r["state"] for r in runs.values()} == {"SUCCESS", "FAILURE"}
    assert not any(r["reconstructed"] for r in runs.values())

    # The chain: render_report's parent is summarize, whose parent is collect_sales.
    render_id = results["report"].id
    summarize_id = results["report"].parent.id
    collect_id = results["report"].parent.parent.id
    detail = staff_client.get(f"/taskdeck/api/tasks/{summarize_id}").json()
    assert detail["workflow"]["parent"]["task_id"] == collect_id
    assert [c["task_id"] for c in detail["workflow"]["children"]] == [render_id]
    assert {t["task_id"] for t in detail["workflow"]["tree"]} == {collect_id, summarize_id, render_id}
    assert [t["state"] for t in detail["timeline"]] == TIMELINE[facts]

    # The chord: three header runs and the callback share the group id.
    callback = staff_client.get(f"/taskdeck/api/tasks/{results['gallery'].id}").json()
    group = callback["workflow"]["group"]
    expected = ["catalog.tasks.publish_gallery"] + ["catalog.tasks.resize_image"] * 3
    assert sorted(t["name"] for t in group) == expected
    assert callback["workflow"]["parent"]["name"] == "catalog.tasks.resize_image"

    # Filters and keyset pagination.
    failed = staff_client.get("/taskdeck/api/tasks", {"state": "FAILURE"}).json()["items"]
    assert [r["task_id"] for r in failed] == [results["feed"].id]
    seen, after = [], None
    while True:
        params = {"limit": 3, "queue": "default", **({"after": after} if after else {})}
        body = staff_client.get("/taskdeck/api/tasks", params).json()
        seen += [r["task_id"] for r in body["items"]]
        if not (after := body["next"]):
            break
    assert len(seen) == len(set(seen)) == 5  # 3 resize + callback + import_feed

    # Stats and /metrics agree with the runs.
    stats = staff_client.get("/taskdeck/api/stats", {"window": 3600}).json()
    assert (stats["finished"], stats["failed"], stats["retried"]) == (10, 1, 2)
    metrics = staff_client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    counters = {(m[0], m[1], m[2]): float(m[3]) for m in re.findall(TOTAL, metrics)}
    assert sum(counters.values()) == 10
    assert counters[("catalog.tasks.resize_image", "default", "SUCCESS")] == 3
    assert counters[("catalog.tasks.import_feed", "default", "FAILURE")] == 1
    charge_count = (
        'taskdeck_task_runtime_seconds_count{name="orders.tasks.charge_payment",queue="high_priority"}'
    )
    assert f"{charge_count} 1.0" in metrics
    assert "taskdeck_workers_online 1.0" in metrics

    # The worker row.
    wait_for(lambda: Worker.objects.filter(hostname=worker.hostname, online=True).exists(), 30, "worker row")
    # Its pool and queues, asked by the recorder (inspect, done once every online worker replied).
    asked = Worker.objects.filter(hostname=worker.hostname, queues__isnull=False).exclude(pool="")
    wait_for(asked.exists, 60, "the worker's pool and queues")
    row = Worker.objects.get(hostname=worker.hostname)
    assert row.pool == "prefork" and row.concurrency and row.concurrency > 0
    assert set(row.queues) == set(QUEUES), row.queues
    workers = staff_client.get("/taskdeck/api/workers").json()
    assert [w["hostname"] for w in workers if w["online"]] == [worker.hostname]


@pytest.mark.parametrize("facts", FACTS)
def test_recorder_restart_loses_no_run(start_worker, start_recorder, facts):
    recorder = start_recorder()
    start_worker(QUEUES, env=FACTS[facts])
    first = [charge_payment.delay(i, 100) for i in range(5)]
    for r in first:
        r.get(timeout=60)
    wait_for(lambda: all_final(5), 60, "the first five runs")
    recorder.kill()  # SIGKILL: no flush, no goodbye

    while_down = [charge_payment.delay(i, 100) for i in range(5, 10)] + [import_feed.delay("bad")]
    for r in while_down:
        r.get(timeout=60, propagate=False)

    start_recorder()
    wait_for(lambda: all_final(11), 60, "eleven finished runs after the restart")
    down_ids = {r.id for r in while_down}
    rows = {r.task_id: r for r in TaskRun.objects.all()}
    assert set(rows) == {r.id for r in first} | down_ids
    # Events sent while no recorder listened are gone: those runs are rebuilt from their result
    # rows. Records wait in the stream for the next recorder: nothing is rebuilt.
    assert all(rows[i].reconstructed == (facts == "events") for i in down_ids)
    assert not any(rows[r.id].reconstructed for r in first)
    failed = next(rows[i] for i in down_ids if rows[i].name == "catalog.tasks.import_feed")
    assert failed.state == "FAILURE" and "http(s)" in failed.exception

    # After the restart events flow again and are not marked reconstructed.
    later = charge_payment.delay(99, 1)
    later.get(timeout=60)
    wait_for(lambda: TaskRun.objects.filter(task_id=later.id, state="SUCCESS").exists(), 60, "a new run")
    assert TaskRun.objects.get(task_id=later.id).reconstructed is False
