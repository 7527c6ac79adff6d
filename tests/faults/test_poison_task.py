"""A poison task that always raises: exponential backoff with jitter, then a failure; re-driving it works.

``tests.support.ledger.poison`` is declared as the reference project declares
its flaky payment task (``autoretry_for``, ``retry_backoff``,
``retry_jitter``), with three retries. Each attempt records its retry number,
the ETA it was scheduled for and the moment it raised, so the delay Celery
chose between two attempts is read from what the task was told, not timed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import pytest
from celery.result import AsyncResult
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from taskdeck.models import AuditEntry, TaskRun
from tests.faults.harness import report
from tests.support.ledger import POISON_BACKOFF, POISON_MAX_RETRIES, poison
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

POISONS = 6


def countdowns(attempts: list[dict]) -> list[float]:
    """Seconds between an attempt raising and the ETA its retry was given (0 when sent with no ETA)."""
    ordered = sorted(attempts, key=lambda a: a["retries"])
    delays = []
    for before, after in zip(ordered, ordered[1:], strict=False):
        eta = datetime.fromisoformat(after["eta"]).timestamp() if after["eta"] else before["at"]
        delays.append(eta - before["at"])
    return delays


def account(django_user_model, username: str, *perms: str) -> Client:
    """A logged-in staff account with ``perms`` (taskdeck's), whose client checks CSRF as a browser would."""
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="taskdeck", codename__in=perms)
    )
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=username, password="pw")
    return client


def test_poison_task_backs_off_with_jitter_fails_and_is_redriven(
    ledger, workers, recorders, staff_client, django_user_model
):
    # The production visibility timeout: a retry waiting for its ETA on a busy machine is not given
    # to a second process (the fault settings' 6 s), which this test does not measure.
    worker = workers(env={"TASKDECK_FAULTS_VISIBILITY_TIMEOUT": "3600"}, concurrency=2)
    recorders()
    sent = [poison.delay(f"p{i}") for i in range(POISONS)]

    def attempts_so_far() -> dict[str, list[tuple[int, bool]]]:
        seen = defaultdict(list)
        for attempt in ledger.attempts():
            seen[attempt["key"]].append((attempt["retries"], attempt["fixed"]))
        return dict(seen)

    wait_for(
        lambda: all(r.ready() for r in sent),
        180,
        lambda: (
            f"every poison task to end: states {[r.state for r in sent]}, attempts {attempts_so_far()},"
            f" worker log {worker.log}"
        ),
    )

    by_task: dict[str, list[dict]] = defaultdict(list)
    for attempt in ledger.attempts():
        by_task[attempt["id"]].append(attempt)
    schedules = {task_id: countdowns(attempts) for task_id, attempts in by_task.items()}
    # Celery's full jitter draws a whole number of seconds in [0, backoff * 2**retry].
    rounded = {task_id: tuple(round(d) for d in delays) for task_id, delays in schedules.items()}
    caps = [POISON_BACKOFF * 2**n for n in range(POISON_MAX_RETRIES)]
    wait_for(
        lambda: TaskRun.objects.filter(name=poison.name, state="FAILURE").count() == POISONS,
        60,
        "the poison runs in the history",
    )
    runs = {r.task_id: r for r in TaskRun.objects.filter(name=poison.name)}
    api = staff_client.get("/taskdeck/api/tasks", {"state": "FAILURE", "name": poison.name}).json()
    viewer = account(django_user_model, "viewer", "view_dashboard")
    operator = account(django_user_model, "operator", "view_dashboard", "retry_task")
    failures_page = viewer.get(reverse("taskdeck:failures")).content.decode()
    counts = {
        "poison_tasks": POISONS,
        "final_states": sorted({r.state for r in sent}),
        "attempts_per_task": sorted({len(a) for a in by_task.values()}),
        "countdowns_s": sorted(",".join(map(str, r)) for r in rounded.values()),
        "backoff_caps_s": caps,
        "distinct_schedules": len(set(rounded.values())),
        "history_retries": sorted({r.retries for r in runs.values()}),
        "api_failures_listed": len(api["items"]),
    }

    assert counts["final_states"] == ["FAILURE"]
    assert counts["attempts_per_task"] == [POISON_MAX_RETRIES + 1]
    for delays in schedules.values():
        for n, delay in enumerate(delays):
            assert abs(delay - round(delay)) < 0.5 and 0 <= round(delay) <= caps[n], (n, delays)
    assert counts["distinct_schedules"] > 1, "jitter: the poison tasks did not all retry on one schedule"
    assert counts["history_retries"] == [POISON_MAX_RETRIES]
    assert counts["api_failures_listed"] == POISONS
    assert poison.name in failures_page and "PoisonError" in failures_page

    # Re-driving: the action needs its permission and a CSRF token.
    target = sent[0].id
    url = reverse("taskdeck:retry", args=[target])
    for client in (viewer, operator):
        client.get(reverse("taskdeck:task", args=[target]))  # the page sets the CSRF cookie
    token = {"csrfmiddlewaretoken": operator.cookies["csrftoken"].value}
    refused_perm = viewer.post(url, {"csrfmiddlewaretoken": viewer.cookies["csrftoken"].value}).status_code
    refused_csrf = operator.post(url).status_code
    ledger.fix("p0")  # the bug behind the poison is fixed; now re-drive it
    response = operator.post(url, token)
    entry = AuditEntry.objects.get(action="retry", target=target)
    redriven = AsyncResult(entry.detail["task_id"])
    counts.update(
        refused_without_permission=refused_perm,
        refused_without_csrf=refused_csrf,
        redrive_status=response.status_code,
        redriven_result=redriven.get(timeout=120),
    )
    report("poison-task", counts)
    assert (refused_perm, refused_csrf) == (403, 403)
    assert response.status_code == 302 and entry.ok
    assert counts["redriven_result"] == "p0 fixed"
