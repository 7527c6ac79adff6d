"""Django tasks (taskdeck.tasks.CeleryBackend) in the recorder, the API, /metrics and the dashboard."""

from __future__ import annotations

import re

import pytest

from taskdeck.models import TaskRun
from tests.support import dtasks
from tests.support.dtasks import DTASK_ARGS
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TOTAL = r'taskdeck_tasks_total\{name="([^"]*)",queue="([^"]*)",state="([^"]*)"\} (\S+)'
QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]


def test_django_tasks_are_recorded_under_their_own_names(start_worker, start_recorder, staff_client, probe):
    start_recorder()
    worker = start_worker(QUEUES, args=DTASK_ARGS, env=probe.env)
    added = dtasks.add.using(priority=100).enqueue(1, 2)
    failed = dtasks.fail.enqueue("gone")
    wait_for(lambda: TaskRun.objects.filter(state__in=["SUCCESS", "FAILURE"]).count() >= 2, 60, "two runs")

    runs = {r["task_id"]: r for r in staff_client.get("/taskdeck/api/tasks").json()["items"]}
    assert (runs[added.id]["name"], runs[added.id]["state"], runs[added.id]["queue"]) == (
        "tests.support.dtasks.add",
        "SUCCESS",
        "high_priority",
    )
    assert runs[added.id]["worker"] == worker.hostname and runs[added.id]["priority"] == 0
    assert runs[failed.id]["name"] == "tests.support.dtasks.fail" and runs[failed.id]["state"] == "FAILURE"
    assert "LookupError" in runs[failed.id]["exception"]

    metrics = staff_client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    counters = {(m[0], m[1], m[2]): float(m[3]) for m in re.findall(TOTAL, metrics)}
    assert counters[("tests.support.dtasks.add", "high_priority", "SUCCESS")] == 1
    assert counters[("tests.support.dtasks.fail", "medium_priority", "FAILURE")] == 1

    page = staff_client.get(f"/taskdeck/tasks/{added.id}/")
    assert page.status_code == 200 and "tests.support.dtasks.add" in page.content.decode()
