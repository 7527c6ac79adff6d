"""The dashboard in a real Chromium, against real workers, Redis, PostgreSQL and the recorder.

One journey, as an operator would take it after `taskdeck demo`: log in, see
the demo's tasks, filter, open a failed task's traceback, open a chord's
graph, retry a failure and watch it succeed, watch a progress bar move, and
check that a hostile task argument is shown as text. Every page is
screenshotted (tests/artifacts/screenshots/, the main ones to docs/screenshots/).
"""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model

from maintenance.tasks import reindex_catalog
from notifications.tasks import send_email, welcome_user
from taskdeck.demo import leaves, workload
from taskdeck.models import AuditEntry, TaskRun
from taskdeck.monitor.merge import FINAL
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]
XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


def finished(task_ids: list[str]) -> bool:
    return TaskRun.objects.filter(task_id__in=task_ids, state__in=FINAL).count() == len(task_ids)


def test_operator_journey(start_worker, start_recorder, live_server, page, accounts, login, shoot):
    worker = start_worker(QUEUES, concurrency=2)
    start_recorder()
    sent = [r.id for job in workload() for r in leaves(job.send())]
    hostile = send_email.delay(f"{XSS}@example.com", XSS_IMG)
    too_early = welcome_user.delay("late-user")  # sent before the account exists: fails
    sent += [hostile.id, too_early.id]
    wait_for(lambda: finished(sent), 150, f"the {len(sent)} runs of the demo to finish")
    url = live_server.url + "/taskdeck"

    # Anonymous: the login page, whatever the page asked for.
    page.goto(f"{url}/tasks/?state=FAILURE")
    assert re.search(r"/taskdeck/login/\?next=", page.url)
    shoot(page, "login", docs=True)

    login(page, "operator")
    page.wait_for_selector("[data-overview][data-loaded='1']")
    page.wait_for_selector("#live #workers td", state="attached")
    assert worker.hostname in page.inner_text("#workers")
    finished_count = TaskRun.objects.filter(state__in=FINAL).count()
    page.wait_for_function(  # the charts refetch every 30 s
        "n => document.querySelector('[data-stat=finished]').textContent === String(n)",
        arg=finished_count,
        timeout=70_000,
    )
    shoot(page, "overview", docs=True)

    # The task list: every task of the demo is there.
    page.goto(f"{url}/tasks/")
    names = set(page.locator("#rows tr[data-task] td:nth-child(2) a").all_inner_texts())
    expected = set(TaskRun.objects.values_list("name", flat=True))
    assert expected <= names and len(expected) >= 10
    shoot(page, "tasks", docs=True)

    # Filter by state: the failures only, as many as the database holds.
    page.check("input[name=state][value=FAILURE]")
    page.wait_for_url(re.compile(r"state=FAILURE"))
    badges = page.locator("#rows tr[data-task] .badge").all_text_contents()
    assert badges and set(badges) == {"failure"}
    assert len(badges) == TaskRun.objects.filter(state="FAILURE").count() == 3
    # ... and search: part of a task name.
    page.goto(f"{url}/tasks/")
    page.fill("input[name=q]", "resize")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"q=resize"))
    rows = page.locator("#rows tr[data-task] td:nth-child(2) a").all_inner_texts()
    assert rows and set(rows) == {"catalog.tasks.resize_image"} and len(rows) == 7  # chord 4 + group 3
    shoot(page, "tasks-search")

    # A failed task's traceback.
    feed = TaskRun.objects.get(name="catalog.tasks.import_feed")
    page.goto(f"{url}/tasks/?state=FAILURE")
    page.click(f"#rows tr[data-task='{feed.task_id}'] td:nth-child(2) a")
    traceback = page.inner_text("#traceback")
    assert "Traceback (most recent call last)" in traceback and "must be http(s)" in traceback
    # Sent, started, failure; with one record per run (the default on Redis) no task-received
    # event is sent, and the timeline says so instead of a time.
    timeline = page.inner_text("#timeline").lower()
    assert timeline.count("ago") == 3 and "received\n—" in timeline, timeline
    shoot(page, "task-failed", docs=True)

    # A forged POST (the session cookie, no CSRF token) is refused and does nothing.
    forged = page.request.post(f"{url}/tasks/{feed.task_id}/retry/", max_redirects=0)
    assert forged.status == 403 and "CSRF" in forged.text()
    assert not AuditEntry.objects.exists()

    # The chord's graph, reached from its callback and from one of its header tasks.
    callback = TaskRun.objects.get(name="catalog.tasks.publish_gallery")
    page.goto(f"{url}/tasks/{callback.task_id}/")
    page.click("#workflow-link")
    page.wait_for_selector("#workflow svg")
    assert page.locator("#workflow a.node").count() == 5
    assert page.locator("#workflow path.edge").count() == 4  # every header task into the callback
    assert "chord header · 4 tasks" in page.text_content("#workflow svg")
    states = set(page.locator("#workflow a.node").evaluate_all("ns => ns.map(n => n.dataset.state)"))
    assert states == {"SUCCESS"}
    shoot(page, "workflow", docs=True)
    header_task = TaskRun.objects.filter(
        name="catalog.tasks.resize_image", group_id=callback.group_id
    ).first()
    page.goto(f"{url}/tasks/{header_task.task_id}/workflow/")
    assert page.locator("#workflow a.node").count() == 5

    # Retry a failure, once its cause is gone, and watch it succeed without reloading.
    get_user_model().objects.create_user("late-user", email="late@example.com")
    page.goto(f"{url}/tasks/{too_early.id}/")
    assert "DoesNotExist" in page.inner_text("#exception")
    page.click("#retry")
    page.wait_for_url(re.compile(r"/taskdeck/tasks/(?!" + too_early.id + r")[^/]+/$"))
    new_id = page.url.rstrip("/").rsplit("/", 1)[1]
    page.wait_for_selector("#task-live .head .badge.ok", timeout=90_000)  # htmx polling, no reload
    retried = TaskRun.objects.get(task_id=new_id)
    assert (retried.name, retried.state, retried.args, retried.queue) == (
        "notifications:welcome_user",
        "SUCCESS",
        TaskRun.objects.get(task_id=too_early.id).args,
        "notifications",
    )
    entry = AuditEntry.objects.get(action="retry", target=too_early.id)
    assert entry.ok and entry.username == "operator" and entry.detail["task_id"] == new_id
    shoot(page, "task-retried")
    page.goto(f"{url}/tasks/{too_early.id}/")
    assert new_id in page.inner_text(".retried-as")

    # A hostile argument is text, not markup.
    page.goto(f"{url}/tasks/{hostile.id}/")
    shown = page.inner_text("#args")  # the captured arguments, as JSON
    assert json.loads(shown) == [f"{XSS}@example.com", XSS_IMG]
    assert page.locator("#args script, #args img, img[src=x]").count() == 0
    page.goto(f"{url}/tasks/?q=send_email")
    assert page.locator("#rows img, #rows script").count() == 0
    assert page.dialogs == []  # no alert() ran

    # A task that reports progress: the bar moves, then the task ends.
    slow = reindex_catalog.delay(30, 0.4)
    # Recorded and not finished (the 12-second task has 30 progress steps ahead of it).
    running = TaskRun.objects.filter(task_id=slow.id).exclude(state__in=FINAL)
    wait_for(running.exists, 60, "reindex recorded")
    page.goto(f"{url}/tasks/{slow.id}/")
    page.wait_for_selector("#progress .fill", timeout=30_000)
    first = float(page.get_attribute("#progress [role=progressbar]", "aria-valuenow"))
    moved = "v => Number(document.querySelector('#progress [role=progressbar]')?.ariaValueNow) > v"
    page.wait_for_function(moved, arg=first)
    shoot(page, "task-progress", docs=True)
    page.wait_for_selector("#task-live .head .badge.ok", timeout=60_000)
    assert page.locator("#progress").count() == 0

    # The other pages, for the record (and for the README).
    for name, path in [
        ("failures", "/failures/"),
        ("queues", "/queues/"),
        ("workers", "/workers/"),
        ("audit", "/audit/"),
    ]:
        response = page.goto(url + path)
        assert response.status == 200
        if name == "queues":  # consumers, asked of the workers once the page is there
            page.wait_for_selector("#queue-rows tr[data-queue=default] .host")
            assert worker.hostname in page.inner_text("#queue-rows tr[data-queue=default]")
        shoot(page, name, docs=True)
    page.goto(f"{url}/failures/?since=1h")
    groups = page.inner_text("#failure-groups")
    assert "ValueError" in groups and "import_feed" in groups and "send_sms" in groups
    assert "DoesNotExist" not in groups  # retried: no longer a failure to act on

    # Phone width and dark mode.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{url}/")
    page.wait_for_selector("[data-overview][data-loaded='1']")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing sticks out
    shoot(page, "overview-phone", docs=True)
    page.goto(f"{url}/tasks/{feed.task_id}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    shoot(page, "task-phone")
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{url}/")
    page.wait_for_selector("[data-overview][data-loaded='1']")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(14, 17, 22)"
    shoot(page, "overview-dark", docs=True)
