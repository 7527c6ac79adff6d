"""Payloads and attempts end to end: real workers (Redis, RabbitMQ), the recorder, Chromium.

- a retry from the task page sends the arguments captured at publish,
  exactly: a 3,000-character argument arrives at the worker as it was sent;
- a payload cut to the size cap is shown as such and its retry refused;
- a task that fails twice, then succeeds, shows its three attempts, with the
  two exceptions and the worker of each;
- values under secret keys appear in no view (API, pages, lists, /metrics,
  the results table), and their retry is refused.
"""

from __future__ import annotations

import json
import re

import pytest
from celery import Celery
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from orders.tasks import charge_payment
from taskdeck.dashboard.actions import Actions
from taskdeck.lanes import declare_queues
from taskdeck.models import FINAL_STATES, AuditEntry, TaskRun
from tests.dashboard.conftest import PASSWORD
from tests.support.ledger import LEDGER_ARGS, Ledger, keep
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: 3,000 characters with what a repr or JSON would change: quotes, a backslash, NUL, non-ASCII.
LONG = ("'\"\\\x00é€𝄞 " + "abcdefghij" * 300)[:3000]
SECRET = "hunter2-s3cr3t"


def finished_run(task_id: str, starts: int = 0) -> TaskRun:
    """The run once it finished with its payload recorded (and ``starts`` attempts started)."""

    def found() -> TaskRun | None:
        run = TaskRun.objects.filter(task_id=task_id, state__in=FINAL_STATES).exclude(payload="").first()
        if run is None or sum(1 for m in run.attempts if m["event"] == "started") < starts:
            return None
        return run

    def seen() -> str:
        run = TaskRun.objects.filter(task_id=task_id).first()
        if run is None:
            return f"run {task_id} recorded: no run yet"
        return f"run {task_id} recorded: {run.state}, payload {bool(run.payload)}, marks {run.attempts}"

    return wait_for(found, 90, seen)


def test_retry_sends_the_captured_arguments_exactly_and_attempts_are_shown(
    broker, start_worker, start_recorder, live_server, page, accounts, login, shoot
):
    ledger = Ledger(broker)
    start_recorder()
    worker = start_worker(["default", "high_priority"], concurrency=2, args=LEDGER_ARGS, env=ledger.env)
    first = keep.delay(LONG, {"nested": [1, 2.5, None, True]}, note="ünï")
    big = keep.delay("y" * 40_000)
    charge = charge_payment.delay(7, 1500, gateway_failures=2)
    for result in (first, big, charge):
        result.get(timeout=120)
    finished_run(first.id)
    finished_run(big.id)
    finished_run(charge.id, starts=3)

    api = Client()
    api.force_login(accounts["viewer"])
    detail = api.get(f"/taskdeck/api/tasks/{first.id}").json()
    assert detail["payload"] == {
        "captured": True,
        "args": [LONG, {"nested": [1, 2.5, None, True]}],
        "kwargs": {"note": "ünï"},
        "truncated": False,
        "redacted": False,
    }
    assert api.get(f"/taskdeck/api/tasks/{big.id}").json()["payload"]["truncated"] is True
    tries = api.get(f"/taskdeck/api/tasks/{charge.id}").json()["attempts"]
    assert [(a["number"], a["state"], a["worker"]) for a in tries] == [
        (1, "RETRY", worker.hostname),
        (2, "RETRY", worker.hostname),
        (3, "SUCCESS", worker.hostname),
    ], TaskRun.objects.get(task_id=charge.id).attempts
    assert "attempt 1" in tries[0]["exception"] and "attempt 2" in tries[1]["exception"]
    assert tries[2]["exception"] == "" and all(a["runtime"] is not None for a in tries)

    url = live_server.url + "/taskdeck"
    login(page, "operator")
    # The attempts on the task page.
    page.goto(f"{url}/tasks/{charge.id}/")
    rows = page.locator("#attempts tr.attempt")
    assert rows.count() == 3
    texts = rows.all_inner_texts()
    assert "PaymentGatewayError" in texts[0] and "attempt 1" in texts[0] and "attempt 2" in texts[1]
    assert all(worker.hostname in t for t in texts) and "success" in texts[2].lower()
    shoot(page, "task-attempts", docs=True)

    # A truncated payload: shown as such, its retry refused.
    page.goto(f"{url}/tasks/{big.id}/")
    assert page.locator("#payload-truncated").count() == 1
    assert page.locator("#retry").is_disabled() and "cut to fit" in page.get_attribute("#retry", "title")

    # The long argument, retried from the page: the worker gets it exactly.
    page.goto(f"{url}/tasks/{first.id}/")
    assert json.loads(page.inner_text("#args")) == [LONG, {"nested": [1, 2.5, None, True]}]
    page.click("#retry")
    page.wait_for_url(re.compile(r"/taskdeck/tasks/(?!" + first.id + r")[^/]+/$"))
    new_id = page.url.rstrip("/").rsplit("/", 1)[1]
    kept = wait_for(lambda: ledger.kept().get(new_id), 60, "the retried task to run")
    original = ledger.kept()[first.id]
    assert (kept["args"], kept["kwargs"]) == (original["args"], original["kwargs"])
    assert kept["args"][0] == LONG and len(kept["args"][0]) == 3000
    assert AuditEntry.objects.get(action="retry", target=first.id).ok


def test_redacted_values_appear_in_no_view_and_are_not_retried(
    broker, start_worker, start_recorder, accounts, django_user_model
):
    ledger = Ledger(broker)
    start_recorder()
    start_worker(["default"], concurrency=1, args=LEDGER_ARGS, env=ledger.env)
    result = keep.delay("visible", {"profile": {"api_key": SECRET, "name": "ann"}}, password=SECRET)
    assert result.get(timeout=60) == "kept"
    assert ledger.kept()[result.id]["kwargs"]["password"] == SECRET  # the worker got the real value
    run = finished_run(result.id)

    admin = django_user_model.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    row = TaskResult.objects.get(task_id=result.id)
    seen = {
        "result row": " ".join(str(getattr(row, f)) for f in ("task_args", "task_kwargs", "result", "meta")),
        "run row": " ".join([run.args, run.kwargs, run.payload, json.dumps(run.attempts)]),
        "api list": client.get("/taskdeck/api/tasks").content.decode(),
        "api detail": client.get(f"/taskdeck/api/tasks/{result.id}").content.decode(),
        "metrics": client.get("/metrics").content.decode(),
        "task page": client.get(reverse("taskdeck:task", args=[result.id])).content.decode(),
        "task list": client.get(reverse("taskdeck:tasks")).content.decode(),
        "failures": client.get(reverse("taskdeck:failures")).content.decode(),
    }
    assert {where: SECRET in text for where, text in seen.items()} == dict.fromkeys(seen, False)
    payload = client.get(f"/taskdeck/api/tasks/{result.id}").json()["payload"]
    assert payload["redacted"] is True and payload["kwargs"]["password"] == "[redacted]"
    assert payload["args"] == ["visible", {"profile": {"api_key": "[redacted]", "name": "ann"}}]
    assert "[redacted]" in seen["task page"] and "redacted" in seen["api list"]
    outcome = Actions(keep.app, admin).retry(run)
    assert not outcome.ok and "redacted" in outcome.message


@pytest.mark.rabbitmq
def test_retry_on_rabbitmq_sends_the_captured_arguments_exactly(
    broker, rabbitmq, start_amqp_worker, start_recorder, accounts
):
    ledger = Ledger(broker)
    app = Celery(
        "taskdeck-test-payloads", broker=rabbitmq, set_as_current=False, fixups=[], amqp="taskdeck.app:AMQP"
    )
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_queues = declare_queues(rabbitmq, [q.name for q in settings.CELERY_TASK_QUEUES])
    app.conf.task_send_sent_event = True
    try:
        start_recorder(env={"CELERY_BROKER": rabbitmq})
        start_amqp_worker(["default"], concurrency=1, args=LEDGER_ARGS, env=ledger.env)
        first = app.send_task(keep.name, args=(LONG,), kwargs={"n": 1}, queue="default")
        run = wait_for(
            lambda: TaskRun.objects.filter(task_id=first.id, state="SUCCESS").exclude(payload="").first(),
            90,
            "the run recorded from RabbitMQ's events",
        )
        outcome = Actions(app, accounts["operator"]).retry(run)
        assert outcome.ok, outcome.message
        new_id = outcome.detail["task_id"]
        kept = wait_for(lambda: ledger.kept().get(new_id), 60, "the retried task to run")
        assert (
            (kept["args"], kept["kwargs"])
            == ([LONG], {"n": 1})
            == (
                ledger.kept()[first.id]["args"],
                ledger.kept()[first.id]["kwargs"],
            )
        )
    finally:
        app.close()
