"""Worker rows are bounded: lists show the first ``WORKERS_SHOWN``, and a worker long gone is forgotten.

Every hostname that ever sent a heartbeat kept a row: hosts that come and go
(one hostname per container) and one ``worker.multi`` event of 20,000
made-up hostnames (anyone who can publish on the event exchange) made the
workers page 12.4 MB and 2.9 s, and the task list's worker filter listed
them all. The heartbeats here go through the recorder's own batch path into
the real database; the pages are rendered by the real views.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from django.utils import timezone

from taskdeck import conf, deadletter
from taskdeck.models import TaskRun, TaskState, Worker
from taskdeck.monitor.recorder import Recorder
from taskdeck.monitor.retention import Retention
from taskdeck.monitor.runs import RunWriter
from taskdeck.monitor.workers import Workers
from taskdeck.querysets import WORKERS_SHOWN

pytestmark = pytest.mark.django_db(transaction=True)
MANY = WORKERS_SHOWN + 150


def heartbeats(count: int, now: float) -> list[dict]:
    return [
        {"type": "worker-heartbeat", "hostname": f"ghost{i:05d}@h", "freq": 2.0, "timestamp": now,
         "active": 0, "processed": 0, "loadavg": [0.0, 0.0, 0.0]}
        for i in range(count)
    ]  # fmt: skip


@pytest.fixture
def recorder():
    return Recorder(
        source=None,
        runs=RunWriter(),
        subscribers=[Workers()],
        results=None,
        settings=conf.monitor(),
        dead_letter=deadletter.store,
    )


def test_lists_show_the_first_workers_online_first(recorder, staff_client):
    recorder.process(heartbeats(MANY, time.time()))
    Worker.objects.filter(hostname="ghost00000@h").update(online=False)
    assert Worker.objects.count() == MANY

    page = staff_client.get("/taskdeck/workers/").content.decode()
    shown = re.findall(r'data-worker="([^"]+)"', page)
    assert len(shown) == WORKERS_SHOWN
    assert "ghost00000@h" not in shown  # offline: after every online one
    assert f"The first {WORKERS_SHOWN} of {MANY} workers" in page

    api = staff_client.get("/taskdeck/api/workers").json()
    assert len(api) == WORKERS_SHOWN and all(w["online"] for w in api)
    assert len(staff_client.get("/taskdeck/api/workers", {"limit": 3}).json()) == 3
    assert len(staff_client.get("/taskdeck/api/workers", {"limit": 10**9}).json()) == WORKERS_SHOWN

    # The task list's worker filter: the same workers, and the one selected even when not among them.
    tasks = staff_client.get("/taskdeck/tasks/", {"worker": "ghost00000@h"}).content.decode()
    select = tasks.split('name="worker"', 1)[1].split("</select>", 1)[0]
    options = re.findall(r'<option value="([^"]*)"', select)
    assert len(options) == WORKERS_SHOWN + 2  # "any", the first WORKERS_SHOWN, the selected one
    assert re.search(r'<option value="ghost00000@h" selected>', select)


def test_a_worker_offline_past_its_retention_is_forgotten_unless_a_run_is_left_on_it(recorder):
    now = time.time()
    recorder.process(heartbeats(6, now))
    long_ago = timezone.now() - dt.timedelta(days=8)
    Worker.objects.exclude(hostname="ghost00005@h").update(online=False, last_heartbeat=long_ago)
    # Gone long ago, but a run was left started on it: kept until liveness has marked that run LOST.
    on_it = {"uuid": "left-1", "hostname": "ghost00000@h", "timestamp": now}
    recorder.process([{**on_it, "type": "task-received", "name": "t"}, {**on_it, "type": "task-started"}])
    assert TaskRun.objects.get(task_id="left-1").state == TaskState.STARTED
    # Gone, but recently.
    Worker.objects.filter(hostname="ghost00001@h").update(
        last_heartbeat=timezone.now() - dt.timedelta(days=1)
    )
    # Never heartbeated (a row from inspect), untouched for long.
    Worker.objects.create(hostname="never@h", online=False)
    Worker.objects.filter(hostname="never@h").update(updated_at=long_ago)

    done = Retention(runs=None, rollups=None, workers=7 * 86400, batch=2).prune()

    assert done == {"workers": 4}  # ghost00002-4 and never@h
    assert sorted(Worker.objects.values_list("hostname", flat=True)) == [
        "ghost00000@h", "ghost00001@h", "ghost00005@h",
    ]  # fmt: skip
    # A forgotten worker that sends a heartbeat again is seen again.
    recorder.process(heartbeats(3, time.time()))
    assert Worker.objects.filter(hostname="ghost00002@h", online=True).exists()
    assert Retention(runs=None, rollups=None, workers=None).prune() == {}
